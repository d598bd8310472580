import KoalaModels
import KoalaTensor

/// Which student features are matched to the teacher's (`[distill] features`).
public enum DistillationFeatureMode: String, Codable, Sendable, CaseIterable {
    /// KOALA (paper Sec. 4.2): the self-attention output (`attn1`) of every student
    /// transformer block, at every stage that has them; the last feature of each stage
    /// without transformer blocks (DW-1, UP-3 in SDXL).
    case selfAttention = "self-attention"
    /// BK-SDM: the last feature of every stage (each down block after its downsampler,
    /// the mid block where the student has one, each up block after its upsampler).
    case lastFeature = "last-feature"
}

/// Which teacher transformer block a student block is matched with when the teacher's
/// stack is deeper (`[distill] mapping`; the KOALA paper's Table 3c and Fig. 7). For a
/// student stack of depth s under a teacher stack of depth t ≥ s, student block l
/// (0-based) takes teacher block:
/// - `sa-bottom` (the paper's choice, and the initialisation's): l — the first s;
/// - `sa-interleave`: ⌊l·t/s⌋ — spread evenly from the first, so SDXL's 10 blocks under
///   KOALA-700M's 5 give every other one, 0, 2, 4, 6, 8 (KOALA-1B's 6: 0, 1, 3, 5, 6, 8);
/// - `sa-up`: t − s + l — the last s.
/// Only `self-attention` features use it; stage outputs have one teacher counterpart.
public enum DistillationLayerMapping: String, Codable, Sendable, CaseIterable {
    case saBottom = "sa-bottom"
    case saInterleave = "sa-interleave"
    case saUp = "sa-up"

    /// The teacher block of student block `l` (0 ≤ l < s ≤ t).
    public func teacherBlock(_ l: Int, studentDepth s: Int, teacherDepth t: Int) -> Int {
        precondition(0 <= l && l < s && s <= t, "DistillationLayerMapping: block \(l) of \(s) under \(t)")
        switch self {
        case .saBottom: return l
        case .saInterleave: return l * t / s
        case .saUp: return t - s + l
        }
    }
}

/// Weights of the three loss terms (`[distill] task_weight`, `output_weight`, `feature_weight`).
public struct DistillationLossWeights: Codable, Sendable, Equatable {
    public var task: Float = 1
    public var output: Float = 1
    public var feature: Float = 1
    public init(task: Float = 1, output: Float = 1, feature: Float = 1) {
        self.task = task
        self.output = output
        self.feature = feature
    }
}

/// One step's loss terms (scalars; `total` carries the student's graph).
public struct DistillationLossTerms {
    /// MSE between the student's prediction and the target (noise or v).
    public let task: Tensor
    /// MSE between the student's and the teacher's predictions.
    public let output: Tensor
    /// Sum over matched features of the MSE between student and teacher.
    public let feature: Tensor
    /// task·w_task + output·w_output + feature·w_feature.
    public let total: Tensor
}

/// KOALA's knowledge-distillation loss, L = L_task + L_outKD + L_featKD (paper Sec. 4.2,
/// weighted): the teacher runs without gradients, features are matched by diffusers
/// module name (`pairs`).
///
/// Which student transformer stack meets which teacher stack follows the student
/// initialisation (`StudentInitialization`): down block i's attention j ← the teacher's
/// j; up block i's first k−1 attentions ← the teacher's first k−1, its last ← the
/// teacher's last; the mid block's ← the teacher's. Inside a stack the `mapping` picks
/// the teacher block.
public struct DistillationLoss {
    public let mode: DistillationFeatureMode
    public let mapping: DistillationLayerMapping
    public let weights: DistillationLossWeights
    /// (student feature, teacher feature) names, in the student's forward order.
    public let pairs: [(student: String, teacher: String)]

    /// Throws a `TrainingError` naming the block when the teacher has no counterpart
    /// of a student feature (another block structure, or a shallower stack).
    public init(student: UNet2DConditionModel, teacher: UNet2DConditionModel, mode: DistillationFeatureMode,
                mapping: DistillationLayerMapping = .saBottom, weights: DistillationLossWeights = .init()) throws {
        self.mode = mode
        self.mapping = mapping
        self.weights = weights
        pairs = try Self.pairs(student: student, teacher: teacher, mode: mode, mapping: mapping)
    }

    static func pairs(student s: UNet2DConditionModel, teacher t: UNet2DConditionModel, mode: DistillationFeatureMode,
                      mapping: DistillationLayerMapping) throws -> [(student: String, teacher: String)] {
        guard s.downBlocks.count == t.downBlocks.count, s.upBlocks.count == t.upBlocks.count else {
            throw TrainingError("the student has \(s.downBlocks.count) down and \(s.upBlocks.count) up blocks, the teacher \(t.downBlocks.count) and \(t.upBlocks.count): distillation matches stage by stage, so both need the same stages (an SDXL-structured teacher and a KOALA student)")
        }
        if s.midBlock != nil, t.midBlock == nil {
            throw TrainingError("the student has a mid block and the teacher none: there is no teacher feature to match mid_block with; use a student without a mid block (koala-700m)")
        }
        var out: [(student: String, teacher: String)] = []
        func stage(_ name: String) { out.append((name, name)) }
        /// Student attention `sa` of stage `prefix` against the teacher's `ta`, block by block.
        func stack(_ prefix: String, _ j: Int, _ sa: Transformer2DModel, _ tj: Int, _ ta: Transformer2DModel) throws {
            let sd = sa.transformerBlocks.count, td = ta.transformerBlocks.count
            guard sd <= td else {
                throw TrainingError("the student's \(prefix).attentions.\(j) has \(sd) transformer blocks, the teacher's \(prefix).attentions.\(tj) only \(td): a student stack must not be deeper than the teacher's")
            }
            for l in 0..<sd {
                let tl = mapping.teacherBlock(l, studentDepth: sd, teacherDepth: td)
                out.append(("\(prefix).attentions.\(j).transformer_blocks.\(l).attn1",
                            "\(prefix).attentions.\(tj).transformer_blocks.\(tl).attn1"))
            }
        }
        func attentions(_ prefix: String, _ sa: [Transformer2DModel], _ ta: [Transformer2DModel], up: Bool) throws {
            guard sa.count <= ta.count else {
                throw TrainingError("the student's \(prefix) has \(sa.count) attentions, the teacher's only \(ta.count)")
            }
            for (j, a) in sa.enumerated() {
                let tj = up && j == sa.count - 1 ? ta.count - 1 : j
                try stack(prefix, j, a, tj, ta[tj])
            }
        }
        func structure(_ prefix: String) -> TrainingError {
            TrainingError("the student's \(prefix) has transformer blocks and the teacher's none (or the other way round): the teacher is not the student's architecture at a larger depth")
        }

        /// A stage matched by its output, or (sa-* modes) attention by attention; both
        /// or neither must have attentions.
        func block(_ prefix: String, _ sa: [Transformer2DModel]?, _ ta: [Transformer2DModel]?, up: Bool) throws {
            switch (sa, ta) {
            case (let sa?, let ta?) where mode == .selfAttention: try attentions(prefix, sa, ta, up: up)
            case (nil, nil), (.some, .some): stage(prefix)
            default: throw structure(prefix)
            }
        }

        for (i, (sb, tb)) in zip(s.downBlocks, t.downBlocks).enumerated() {
            try block("down_blocks.\(i)", (sb as? CrossAttnDownBlock2D)?.attentions, (tb as? CrossAttnDownBlock2D)?.attentions, up: false)
        }
        if let sm = s.midBlock, let tm = t.midBlock {
            try block("mid_block", sm.attentions, tm.attentions, up: false)
        }
        for (i, (sb, tb)) in zip(s.upBlocks, t.upBlocks).enumerated() {
            try block("up_blocks.\(i)", (sb as? CrossAttnUpBlock2D)?.attentions, (tb as? CrossAttnUpBlock2D)?.attentions, up: true)
        }
        return out
    }

    /// One step: the teacher's prediction and features without gradients, then the
    /// student's with them, and the three terms. Inputs as `UNet2DConditionModel`'s.
    public func callAsFunction(student: UNet2DConditionModel, teacher: UNet2DConditionModel, sample: Tensor,
                               timestep: [Float], encoderHiddenStates: Tensor, textEmbeds: Tensor? = nil,
                               timeIds: Tensor? = nil, target: Tensor) -> DistillationLossTerms {
        let teacherFeatures = UNetFeatureRecorder(recording: Set(pairs.map { $0.teacher }))
        let teacherOut = noGrad {
            teacher(sample: sample, timestep: timestep, encoderHiddenStates: encoderHiddenStates,
                    textEmbeds: textEmbeds, timeIds: timeIds, recorder: teacherFeatures)
        }
        let studentFeatures = UNetFeatureRecorder(recording: Set(pairs.map { $0.student }))
        let studentOut = student(sample: sample, timestep: timestep, encoderHiddenStates: encoderHiddenStates,
                                 textEmbeds: textEmbeds, timeIds: timeIds, recorder: studentFeatures)
        precondition(teacherFeatures.missing.isEmpty && studentFeatures.missing.isEmpty,
                     "DistillationLoss: features not produced: \(teacherFeatures.missing + studentFeatures.missing)")
        let task = studentOut.mseLoss(target)
        let output = studentOut.mseLoss(teacherOut)
        var feature: Tensor?
        for (s, t) in pairs {
            let term = studentFeatures.features[s]!.mseLoss(teacherFeatures.features[t]!)
            feature = feature.map { $0 + term } ?? term
        }
        let featureSum = feature ?? Tensor.scalar(0)
        let total = task * weights.task + output * weights.output + featureSum * weights.feature
        return DistillationLossTerms(task: task, output: output, feature: featureSum, total: total)
    }
}
