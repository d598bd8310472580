import KoalaTensor

extension Module {
    /// Holds the weights of every `Linear` and `Conv2d` below this module that is frozen
    /// (`requiresGrad` false) in bf16 from now on: the bf16 precision mode's half-size
    /// resident weights (Precision.swift). Call it after loading and after merging any
    /// LoRA (merges write the float32 weights). Biases, norms and embeddings stay float32
    /// (small; autocast leaves embeddings and norms alone). Returns the bytes freed.
    @discardableResult
    public func holdFrozenGEMMWeightsInBF16() -> Int {
        var freed = 0
        visitModules { m in
            let weight: Tensor
            if let l = m as? Linear { weight = l.weight } else if let c = m as? Conv2d { weight = c.weight } else { return }
            guard !weight.requiresGrad, !weight.isHeldInBF16 else { return }
            weight.holdInBF16()
            freed += weight.count * 2
        }
        return freed
    }

    /// Calls `body` on this module and every module below it.
    func visitModules(_ body: (any Module) -> Void) {
        body(self)
        for (_, entry) in entries {
            switch entry {
            case .parameter: break
            case .module(let m): m.visitModules(body)
            case .list(let ms): for m in ms { m.visitModules(body) }
            }
        }
    }
}
