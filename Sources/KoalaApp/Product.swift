/// The product as the CLI, the service and the files they write name it.
public enum Product {
    public static let name = "KoalaBooth"
    public static let version = "0.1.0"
}
