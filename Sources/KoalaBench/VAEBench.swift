import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor

/// The last step of text-to-image at large sizes: the SDXL/KOALA VAE (fp16-fix config,
/// 512 px tiles, random weights) decoding one image's latents whole or in tiles
/// (`VAETiling`), in a child process each, so the peak RSS is that decode's (weights
/// included, 320 MiB). tools/bench/torch_ops.py decodes the same in diffusers, with and
/// without `enable_tiling()`.
enum VAEBench {
    static var cases: [BenchCase] {
        [(1024, "vae"), (2048, "vae2048")].flatMap { size, group in
            [false, true].map { tiled in
                // Tens of seconds to minutes a run: one run, no warm-up.
                BenchCase(name: "vae-decode sdxl \(size) \(tiled ? "tiled" : "untiled")", flops: nil, group: group,
                          warmup: false, minTime: 0, maxRuns: 1, isolated: true) { decode(size: size, tiled: tiled) }
            }
        }
    }

    static func decode(size: Int, tiled: Bool) -> () -> Void {
        let config = AutoencoderKLConfig.sdxl
        // Refuse what cannot fit instead of pushing the machine into swap or the OOM killer.
        let fp = GenerationFootprint(unet: .koala700M, vae: config, vaeScaleFactor: 8, guidance: false)
        let needed = fp.decodeBytes(width: size, height: size, tiled: tiled) + GenerationFootprint.imageBytesPerPixel * Double(size * size)
        if let available = SystemMemory.availableBytes(), needed > Double(available) {
            FileHandle.standardError.write(Data(String(format: "  skipped: the decode needs about %.1f GiB, %.1f GiB is available\n",
                                                       needed / 1_073_741_824, Double(available) / 1_073_741_824).utf8))
            exit(3)
        }
        let vae = AutoencoderKL(config: config, init: ParameterInitializer(seed: 0))
        var g = TorchGenerator(seed: 0)
        let latents = g.randn([1, config.latentChannels, size / 8, size / 8])
        return {
            let image = noGrad { vae.decode(latents, tiled: tiled) }
            precondition(image.shape == [1, 3, size, size])
        }
    }
}
