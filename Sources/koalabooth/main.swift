import KoalaCLI

KoalaBoothCommand.main()
