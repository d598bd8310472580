import KoalaTensor

/// What a module holds under one name: a parameter tensor, a child module, or a list
/// of child modules (named "0", "1", … as in PyTorch's `nn.ModuleList`).
public enum ModuleEntry {
    case parameter(Tensor)
    case module(any Module)
    case list([any Module])
}

/// A layer or model. Its entries carry the names diffusers and transformers use, so a
/// parameter's path (`down_blocks.1.attentions.0.proj_in.weight`) is its checkpoint
/// key and loading is a lookup.
public protocol Module: AnyObject {
    var entries: [(String, ModuleEntry)] { get }

    /// Loads a checkpoint's weights (`loadExactKeys` unless a model also reads older or
    /// other libraries' key names, mapping them first).
    @discardableResult
    func load(keys: Set<String>, _ lookup: (String) throws -> Tensor) throws -> LoadReport
}

extension Module {
    /// Every parameter with its full dotted path, in declaration order.
    public func namedParameters(prefix: String = "") -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        collect(prefix: prefix, into: &out)
        return out
    }

    private func collect(prefix: String, into out: inout [(String, Tensor)]) {
        for (name, entry) in entries {
            let path = prefix.isEmpty ? name : "\(prefix).\(name)"
            switch entry {
            case .parameter(let t): out.append((path, t))
            case .module(let m): m.collect(prefix: path, into: &out)
            case .list(let ms): for (i, m) in ms.enumerated() { m.collect(prefix: "\(path).\(i)", into: &out) }
            }
        }
    }

    public var parameterCount: Int { namedParameters().reduce(0) { $0 + $1.1.count } }

    /// Marks every parameter trainable (true) or frozen (false).
    public func setRequiresGrad(_ flag: Bool) {
        for (_, t) in namedParameters() { t.requiresGrad = flag; if !flag { t.grad = nil } }
    }

    /// Copies values into the parameters from `lookup(key)`. Keys the lookup lacks are
    /// reported in `missing`; shape mismatches throw (after every key has been checked),
    /// and parameters read before the first mismatch may already have been written, so
    /// discard the module when it throws.
    @discardableResult
    public func load(keys: Set<String>, _ lookup: (String) throws -> Tensor) throws -> LoadReport {
        try loadExactKeys(keys, lookup)
    }

    /// `load` by the parameter paths themselves.
    @discardableResult
    public func loadExactKeys(_ available: Set<String>, _ lookup: (String) throws -> Tensor) throws -> LoadReport {
        let params = namedParameters()
        let wanted = Set(params.map(\.0))
        var report = LoadReport(missing: params.map(\.0).filter { !available.contains($0) },
                                unexpected: available.subtracting(wanted).sorted())
        // Each value is written as soon as it is read, so only one converted tensor is
        // alive at a time: staging them all first doubled a component's memory while
        // loading (the KOALA-700M pipeline peaked at 10.4 GiB for 6.3 GiB of weights).
        for (key, param) in params where available.contains(key) {
            let value = try lookup(key)
            if value.shape != param.shape { report.mismatched.append((key, param.shape, value.shape)) }
            else if report.mismatched.isEmpty { param.assign(value) }
        }
        guard report.mismatched.isEmpty else { throw report }
        return report
    }
}

/// The outcome of loading a state dict into a module.
public struct LoadReport: Error, CustomStringConvertible {
    public var missing: [String]
    public var unexpected: [String]
    public var mismatched: [(key: String, expected: [Int], found: [Int])] = []

    public var isExact: Bool { missing.isEmpty && unexpected.isEmpty && mismatched.isEmpty }

    public var description: String {
        var lines: [String] = []
        func list(_ title: String, _ items: [String]) {
            guard !items.isEmpty else { return }
            lines.append("\(title) (\(items.count)): " + items.prefix(10).joined(separator: ", ") + (items.count > 10 ? ", …" : ""))
        }
        list("missing keys", missing)
        list("unexpected keys", unexpected)
        list("shape mismatches", mismatched.map { "\($0.key) expects \($0.expected), file has \($0.found)" })
        return lines.isEmpty ? "all keys matched" : lines.joined(separator: "\n")
    }
}
