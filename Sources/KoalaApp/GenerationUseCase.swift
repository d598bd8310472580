import Foundation
import KoalaDiffusion
import KoalaImageIO
import KoalaModels
import KoalaStore
import KoalaTensor

/// The generation use case: draws a request's images for a model or a trained subject,
/// writes each as it is finished (PNG with its text chunks and A1111's `parameters`
/// chunk, or JPEG), and records a subject's images in its history.
public struct GenerationUseCase: Sendable {
    /// The store a subject is looked up in and its images are recorded in.
    public let location: StoreLocation

    public init(location: StoreLocation) { self.location = location }

    /// Runs `request` (checked with `validate()` first), reporting to `events` as it goes.
    /// Images are drawn, written and recorded one at a time: memory does not grow with
    /// the count, and a failure keeps the images finished before it.
    @discardableResult
    public func run(_ request: GenerationRequest, events: (GenerationEvent) -> Void = { _ in }) throws -> GenerationOutcome {
        try request.validate()
        let trained = try request.subject.map { try SubjectCheckpoint.resolve($0, runID: request.runID, in: location) }
        let model = request.model ?? trained!.run.baseModelPath
        var p = request.parameters
        if let trained {
            p.prompt = trained.substitute(p.prompt)
            p.negativePrompt = p.negativePrompt.map(trained.substitute)
        }
        guard let output = try request.output ?? trained?.defaultOutput() else { throw GenerationRequestError.noOutput }
        let jpeg = ["jpg", "jpeg"].contains(URL(fileURLWithPath: output).pathExtension.lowercased())
        let outDir = URL(fileURLWithPath: output).deletingLastPathComponent().path
        for path in [output, request.saveLatents].compactMap({ $0 }) {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            guard FileManager.default.fileExists(atPath: dir) else { throw GenerationRequestError.outputFolderMissing(path: path, folder: dir) }
        }
        guard FileManager.default.fileExists(atPath: model) else { throw GenerationRequestError.modelMissing(path: model) }
        if let lora = request.lora, !FileManager.default.fileExists(atPath: lora) { throw GenerationRequestError.loraMissing(path: lora) }

        events(.loadingModel(path: model))
        let pipeline = try StableDiffusionXLPipeline.load(from: model, variant: request.variant)
        if let trained {
            events(.usingCheckpoint(subject: trained.subject.name, runID: trained.run.id!, step: trained.checkpoint.step, kind: trained.checkpoint.kind))
            try trained.apply(to: pipeline, scale: request.loraScale)
        }
        if let lora = request.lora {
            let applied = try pipeline.applyLoRA(path: lora, scale: request.loraScale)
            events(.appliedLoRA(path: lora, format: applied.format.rawValue, weights: applied.updates.count, scale: request.loraScale))
        }
        // bf16 mode: after every merge (merges write the float32 weights).
        Precision.compute = request.precision.resolved()
        if Precision.compute == .bf16 {
            let freed = [pipeline.unet as any Module, pipeline.textEncoder, pipeline.textEncoder2, pipeline.vae]
                .reduce(0) { $0 + $1.holdFrozenGEMMWeightsInBF16() }
            events(.weightsHeldInBF16(freedBytes: freed))
        }
        let count = p.count
        let size = (width: p.width ?? pipeline.defaultSize.width, height: p.height ?? pipeline.defaultSize.height)
        let shape = try pipeline.latentShape(width: size.width, height: size.height, count: count)
        let latentBytes = Double(shape.dropFirst().reduce(1, *) * MemoryLayout<Float>.size)
        // The decode is then tiled exactly where the bounds check counted it tiled.
        p.vaeTiling = try pipeline.checkRequest(width: size.width, height: size.height, count: count, guidance: p.guidance, vaeTiling: p.vaeTiling,
                                                keptBytesPerImage: request.saveLatents == nil ? 0 : latentBytes, available: SystemMemory.availableBytes())
        let bytes = Double(count) * GenerationFootprint.outputBytes(width: size.width, height: size.height)
        if let free = SubjectStore.availableBytes(URL(fileURLWithPath: outDir)).map({ Double($0) }), bytes > free {
            throw GenerationRequestError.notEnoughDiskSpace(count: count, width: size.width, height: size.height,
                                                            bytes: bytes, folder: outDir, free: free)
        }
        let noise = try request.latents.map { try Self.readLatents($0, expected: shape) }

        let saved = request.saveLatents == nil ? nil : Tensor(empty: shape)
        let paths = GenerationRequest.outputPaths(output, count: count)
        let meta = request.metadata(p, width: size.width, height: size.height, model: model,
                                    schedulerConfig: pipeline.schedulerConfig, trained: trained)
        let text = meta.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
        var outcome = GenerationOutcome(imagePaths: [], recorded: [], latentsPath: nil)
        try pipeline.generateEach(p, noise: noise, progress: { index, progress in
            events(.step(index: index, count: count, progress: progress))
        }) { i, latents, decoded in
            if let saved {
                let n = saved.count / count
                (saved.data + i * n).update(from: latents.contiguous().data, count: n)
            }
            let pixels = decoded.contiguous()
            let values = Array(UnsafeBufferPointer(start: pixels.data, count: pixels.count))
            let image = RGBImage(planarFloats: values, width: size.width, height: size.height)
            let path = paths[i]
            if jpeg {
                try image.writeJPEG(path: path, quality: request.jpegQuality)
            } else {
                var chunks = text
                if count > 1 { chunks.append((key: "index", value: "\(i + 1) of \(count)")) }
                try image.writePNG(path: path, text: chunks)
            }
            outcome.imagePaths.append(path)
            events(.wroteImage(index: i, path: path))
            guard let trained else { return }
            if let recorded = try trained.record(p, width: size.width, height: size.height, imagePath: path) {
                outcome.recorded.append(recorded)
                events(.recorded(recorded))
            } else {
                events(.notRecorded(subject: trained.subject.name, path: path))
            }
        }
        if let saveLatents = request.saveLatents, let saved {
            try SafeTensors.write(["latents": saved], to: saveLatents, metadata: meta)
            outcome.latentsPath = saveLatents
            events(.wroteLatents(path: saveLatents))
        }
        return outcome
    }

    /// The starting noise in `path`: a finite tensor `latents` of shape `expected`.
    static func readLatents(_ path: String, expected: [Int]) throws -> Tensor {
        guard FileManager.default.fileExists(atPath: path) else { throw GenerationRequestError.latentsMissing(path: path) }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path, maxBytes: 1 << 30) } catch {
            throw GenerationRequestError.latentsUnreadable(path: path, reason: "\(error)")
        }
        let t: Tensor
        do { t = try file.tensor("latents") } catch {
            throw GenerationRequestError.latentsTensorMissing(path: path, found: file.entries.keys.sorted())
        }
        guard t.shape == expected else { throw GenerationRequestError.latentsShape(path: path, found: t.shape, expected: expected) }
        if let bad = t.firstNonFinite() {
            throw GenerationRequestError.latentsNotFinite(path: path, value: Float(bad.value), index: bad.index)
        }
        return t
    }
}
