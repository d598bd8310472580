import ArgumentParser
import KoalaApp

/// `koalabooth`: the root command.
public struct KoalaBoothCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "koalabooth",
        abstract: "DreamBooth personalisation of KOALA-700M text-to-image models on the CPU.",
        discussion: "Models are diffusers folders (model_index.json, unet/, vae/, text_encoder/, …). Nothing is downloaded: supply real weights yourself, or make a tiny random model with `koalabooth model init --preset tiny`.",
        version: Product.version,
        subcommands: [GenerateCommand.self, TrainCommand.self, DistillCommand.self, ModelCommand.self, SubjectCommand.self, RunsCommand.self, DoctorCommand.self, KeysCommand.self, ServeCommand.self]
    )

    public init() {}

    /// ArgumentParser's `main`, with the library errors a command throws worded for the
    /// command line (`ErrorWording`): which flag or command fixes them.
    public static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: ErrorWording.cli(error))
        }
    }
}
