import ArgumentParser
import Foundation
import KoalaApp

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Make, list and revoke the API keys of `koalabooth serve`.",
        discussion: """
            Every request to the service carries a key (Authorization: Bearer KEY). A key owns the subjects it \
            creates and reaches no others; subjects made on the command line are not reachable through the API. \
            Only a hash of each secret is stored: the secret is shown once, when the key is made.
            """,
        subcommands: [KeysCreate.self, KeysList.self, KeysRevoke.self]
    )
}

struct KeysCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Make an API key and print its secret (shown only this once)."
    )

    @Argument(help: "Key name: letters, digits, '-' and '_' (who or what uses it, e.g. phone-app).")
    var name: String

    @Flag(help: "Print {\"name\": …, \"key\": …} as JSON.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let key = try APIKeyUseCases(location: global.location).create(name: name)
        if json {
            struct Created: Encodable { var name: String; var key: String }
            return try Output.json(Created(name: key.name, key: key.secret))
        }
        print(key.secret)
        Output.note("Made API key \(key.name). Keep the secret above: it is not stored and cannot be shown again (revoke it with `koalabooth keys revoke \(key.name)`).")
    }
}

struct KeysList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the API keys (never their secrets).")

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let keys = try APIKeyUseCases(location: global.location).list()
        if json { return try Output.json(keys) }
        if keys.isEmpty {
            print("No API keys in \(global.homeURL.path). Make one with `koalabooth keys create NAME`.")
            return
        }
        Format.table(header: ["name", "created", "revoked"], rows: keys.map { [$0.name, Output.date($0.createdAt), Output.date($0.revokedAt)] })
    }
}

struct KeysRevoke: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke an API key: requests with it are refused from now on; its subjects stay."
    )

    @Argument(help: "Key name.")
    var name: String

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let key = try APIKeyUseCases(location: global.location).revoke(name: name)
        print("Revoked API key \(key.name) (revoked \(Output.date(key.revokedAt))).")
    }
}
