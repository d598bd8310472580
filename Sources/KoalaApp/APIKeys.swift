import Crypto
import Foundation
import KoalaStore

/// A new key: its name and the secret, which exists only here; the store keeps a hash.
public struct NewAPIKey: Sendable, Equatable {
    public var name: String
    /// "kb_" and 43 base64url characters (256 random bits).
    public var secret: String
}

/// A key as listings show it: never its secret or hash.
public struct APIKeyInfo: Codable, Sendable, Equatable {
    public var name: String
    public var createdAt: Date
    public var revokedAt: Date?

    public init(_ key: APIKey) {
        name = key.name
        createdAt = key.createdAt
        revokedAt = key.revokedAt
    }
}

/// The API key use cases: make, list, revoke keys, and tell which key a request's secret
/// is. Each key owns the subjects it creates (`SubjectUseCases`' `owner`); a subject
/// made on the command line has no owner and no key reaches it.
public struct APIKeyUseCases: Sendable {
    public static let secretPrefix = "kb_"

    public let location: StoreLocation

    public init(location: StoreLocation) { self.location = location }

    /// Makes a key with a fresh secret from the system's secure random generator.
    public func create(name: String) throws -> NewAPIKey {
        try APIKey.validate(name: name)
        let secret = Self.newSecret()
        let key = try location.open().createAPIKey(name: name, secretSHA256: Self.hash(secret))
        return NewAPIKey(name: key.name, secret: secret)
    }

    /// Every key by name, revoked ones included; none when there is no data directory.
    public func list() throws -> [APIKeyInfo] {
        try location.openExisting()?.apiKeys().map(APIKeyInfo.init) ?? []
    }

    /// Revokes the key `name`: requests with its secret fail from now on. Its subjects
    /// stay in the store, out of every key's reach.
    @discardableResult
    public func revoke(name: String) throws -> APIKeyInfo {
        guard let store = try location.openExisting() else { throw APIKeyError.unknownKey(name: name) }
        return APIKeyInfo(try store.revokeAPIKey(named: name))
    }

    /// The unrevoked key `secret` belongs to, or nil. The secret is looked up by its
    /// hash, so no comparison of secrets happens whose timing could leak one: the
    /// database search runs on SHA-256 values an attacker cannot steer toward a
    /// stored one byte by byte.
    public func authenticate(secret: String) throws -> APIKey? {
        guard secret.hasPrefix(Self.secretPrefix), secret.utf8.count < 256 else { return nil }
        return try location.openExisting()?.activeAPIKey(secretSHA256: Self.hash(secret))
    }

    /// Whether any unrevoked key exists (a service on a public address needs one).
    public func anyActiveKey() throws -> Bool {
        try (location.openExisting()?.activeAPIKeyCount() ?? 0) > 0
    }

    static func newSecret() -> String {
        let bytes = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }
        let base64url = bytes.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return secretPrefix + base64url
    }

    static func hash(_ secret: String) -> String { KoalaStore.SHA256.hex(Data(secret.utf8)) }
}

extension SubjectStore {
    /// The subject called `name` if `owner` may reach it: every subject when `owner` is
    /// nil (the command line), else only those the key made. Anything else is
    /// `unknownSubject`, exactly as if it did not exist.
    func requireSubject(named name: String, visibleTo owner: APIKey?) throws -> Subject {
        let subject = try requireSubject(named: name)
        if let owner, try ownerKeyID(ofSubject: subject.id!) != owner.id { throw StoreError.unknownSubject(name: name) }
        return subject
    }

    /// The subject with `id` if `owner` may reach it (as `requireSubject(named:visibleTo:)`), else nil.
    public func subject(id: Int64, visibleTo owner: APIKey?) throws -> Subject? {
        guard let subject = try subject(id: id) else { return nil }
        if let owner, try ownerKeyID(ofSubject: id) != owner.id { return nil }
        return subject
    }
}
