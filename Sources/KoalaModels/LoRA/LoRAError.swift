/// A LoRA problem the user can fix: a file that does not fit the model, a config a run
/// cannot use, a checkpoint trained with other settings. One type for loading, training
/// and export, so one `catch` covers every LoRA problem whatever modules are imported.
public struct LoRAError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
