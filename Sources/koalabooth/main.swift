import ArgumentParser

struct KoalaBooth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "koalabooth",
        abstract: "DreamBooth personalisation of KOALA-700M text-to-image models on the CPU.",
        version: "0.1.0"
    )
}

KoalaBooth.main()
