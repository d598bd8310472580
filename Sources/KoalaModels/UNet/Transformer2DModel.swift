import KoalaTensor

/// diffusers' `Attention` as `BasicTransformerBlock` builds it: bias-free `to_q`,
/// `to_k`, `to_v`, biased `to_out.0`, scaled dot-product attention over `heads` heads.
public final class Attention: Module {
    public let toQ, toK, toV, toOut: Linear
    public let heads: Int

    /// `crossAttentionDim` nil makes it self-attention (keys from the queries' input).
    public init(queryDim: Int, crossAttentionDim: Int?, heads: Int, dimHead: Int, init p: ParameterInitializer) {
        let inner = heads * dimHead
        let kvDim = crossAttentionDim ?? queryDim
        toQ = Linear(queryDim, inner, bias: false, init: p)
        toK = Linear(kvDim, inner, bias: false, init: p)
        toV = Linear(kvDim, inner, bias: false, init: p)
        toOut = Linear(inner, queryDim, init: p)
        self.heads = heads
    }

    public var entries: [(String, ModuleEntry)] {
        // `to_out.1` is a dropout: no parameters, but it keeps the index.
        [("to_q", .module(toQ)), ("to_k", .module(toK)), ("to_v", .module(toV)),
         ("to_out", .list([toOut, NamedModules([])]))]
    }

    /// x: [B, L, queryDim]; context: [B, S, crossAttentionDim] or nil. Returns [B, L, queryDim].
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let ctx = context ?? x
        let b = x.shape[0], l = x.shape[1], s = ctx.shape[1]
        let inner = toQ.weight.shape[0], d = inner / heads
        // Heads are views of the projections: [B, L, H, D] permuted to [B, H, L, D].
        func split(_ t: Tensor, _ len: Int) -> Tensor { t.reshape([b, len, heads, d]).permute([0, 2, 1, 3]) }
        let o = Tensor.scaledDotProductAttention(query: split(toQ(x), l), key: split(toK(ctx), s), value: split(toV(ctx), s))
        // The attention output is stored [B, L, H, D], so merging heads copies nothing.
        return toOut(o.permute([0, 2, 1, 3]).reshape([b, l, inner]))
    }
}

/// diffusers' `FeedForward` with `activation_fn="geglu"`: `net.0` is `GEGLU` (a
/// projection to twice the hidden width, then `hidden · gelu(gate)`), `net.1` a
/// dropout, `net.2` the output projection.
public final class FeedForward: Module {
    public let proj: Linear
    public let out: Linear

    public init(dim: Int, mult: Int = 4, init p: ParameterInitializer) {
        proj = Linear(dim, dim * mult * 2, init: p)
        out = Linear(dim * mult, dim, init: p)
    }

    public var entries: [(String, ModuleEntry)] {
        [("net", .list([NamedModules([("proj", .module(proj))]), NamedModules([]), out]))]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { out(proj(x).geglu()) }
}

/// diffusers' `BasicTransformerBlock` (layer norms, no ada-norm): self-attention,
/// cross-attention on the text, GEGLU feed-forward, each pre-normed and residual.
public final class BasicTransformerBlock: Module {
    public let norm1: LayerNorm
    public let attn1: Attention
    public let norm2: LayerNorm
    public let attn2: Attention
    public let norm3: LayerNorm
    public let ff: FeedForward

    public init(dim: Int, heads: Int, dimHead: Int, crossAttentionDim: Int, init p: ParameterInitializer) {
        norm1 = LayerNorm(dim, eps: 1e-5, init: p)
        attn1 = Attention(queryDim: dim, crossAttentionDim: nil, heads: heads, dimHead: dimHead, init: p)
        norm2 = LayerNorm(dim, eps: 1e-5, init: p)
        attn2 = Attention(queryDim: dim, crossAttentionDim: crossAttentionDim, heads: heads, dimHead: dimHead, init: p)
        norm3 = LayerNorm(dim, eps: 1e-5, init: p)
        ff = FeedForward(dim: dim, init: p)
    }

    public var entries: [(String, ModuleEntry)] {
        [("norm1", .module(norm1)), ("attn1", .module(attn1)), ("norm2", .module(norm2)),
         ("attn2", .module(attn2)), ("norm3", .module(norm3)), ("ff", .module(ff))]
    }

    /// x: [B, L, dim]; context: [B, S, crossAttentionDim]. `features` records the
    /// self-attention output as `attn1` (distillation).
    public func callAsFunction(_ x: Tensor, context: Tensor, features: UNetFeatureScope? = nil) -> Tensor {
        let selfAttention = attn1(norm1(x))
        features?.record("attn1", selfAttention)
        var h = x + selfAttention
        h = h + attn2(norm2(h), context: context)
        return h + ff(norm3(h))
    }
}

/// diffusers' `Transformer2DModel` on continuous input: group norm, `proj_in` (linear
/// on tokens, or a 1x1 convolution), transformer blocks over the H·W tokens,
/// `proj_out`, plus the input.
public final class Transformer2DModel: Module {
    public enum Projection {
        case linear(Linear)
        case conv(Conv2d)

        var module: any Module {
            switch self {
            case .linear(let l): return l
            case .conv(let c): return c
            }
        }
    }

    public let norm: GroupNorm
    public let projIn: Projection
    public let transformerBlocks: [BasicTransformerBlock]
    public let projOut: Projection

    public init(heads: Int, dimHead: Int, inChannels: Int, layers: Int, crossAttentionDim: Int, groups: Int,
                useLinearProjection: Bool, init p: ParameterInitializer) {
        let inner = heads * dimHead
        norm = GroupNorm(groups: groups, channels: inChannels, eps: 1e-6, init: p)
        projIn = useLinearProjection ? .linear(Linear(inChannels, inner, init: p))
            : .conv(Conv2d(inChannels, inner, kernelSize: 1, init: p))
        transformerBlocks = (0..<layers).map { _ in
            BasicTransformerBlock(dim: inner, heads: heads, dimHead: dimHead, crossAttentionDim: crossAttentionDim, init: p)
        }
        projOut = useLinearProjection ? .linear(Linear(inner, inChannels, init: p))
            : .conv(Conv2d(inner, inChannels, kernelSize: 1, init: p))
    }

    public var entries: [(String, ModuleEntry)] {
        [("norm", .module(norm)), ("proj_in", .module(projIn.module)),
         ("transformer_blocks", .list(transformerBlocks)), ("proj_out", .module(projOut.module))]
    }

    /// x: [B, C, H, W]; context: [B, S, crossAttentionDim]. With `checkpointing`, each
    /// transformer block keeps only its input and is recomputed during backward, except
    /// the blocks whose self-attention `features` records: a recorded feature must keep
    /// its graph (a checkpointed block's forward builds none) for the distillation loss.
    public func callAsFunction(_ x: Tensor, context: Tensor, checkpointing: Bool = false,
                               features: UNetFeatureScope? = nil) -> Tensor {
        let b = x.shape[0], c = x.shape[1], height = x.shape[2], width = x.shape[3]
        var h: Tensor
        let inner: Int
        switch projIn {
        case .linear(let l):
            inner = l.weight.shape[0]
            h = l(norm(x).permute([0, 2, 3, 1]).reshape([b, height * width, c]))
        case .conv(let conv):
            inner = conv.weight.shape[0]
            h = conv(norm(x)).permute([0, 2, 3, 1]).reshape([b, height * width, inner])
        }
        for (l, block) in transformerBlocks.enumerated() {
            let scope = features?.child("transformer_blocks.\(l)")
            if checkpointing, !(scope?.wants("attn1") ?? false) {
                h = checkpoint([h, context]) { block($0[0], context: $0[1]) }
            } else {
                h = block(h, context: context, features: scope)
            }
        }
        switch projOut {
        case .linear(let l):
            h = l(h).reshape([b, height, width, c]).permute([0, 3, 1, 2])
        case .conv(let conv):
            h = conv(h.reshape([b, height, width, inner]).permute([0, 3, 1, 2]))
        }
        // The add reads the channels-last view in place and writes NCHW.
        return h + x
    }
}
