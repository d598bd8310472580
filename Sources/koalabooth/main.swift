import KoalaCLI
import Logging

LoggingSystem.bootstrap { StderrLogHandler(label: $0) }
KoalaBoothCommand.main()
