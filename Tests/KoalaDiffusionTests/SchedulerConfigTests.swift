import Foundation
import XCTest
@testable import KoalaDiffusion

final class SchedulerConfigTests: XCTestCase {
    /// stabilityai/stable-diffusion-xl-base-1.0, scheduler/scheduler_config.json.
    static let sdxlJSON = """
    {
      "_class_name": "EulerDiscreteScheduler",
      "_diffusers_version": "0.19.0.dev0",
      "beta_end": 0.012,
      "beta_schedule": "scaled_linear",
      "beta_start": 0.00085,
      "clip_sample": false,
      "interpolation_type": "linear",
      "num_train_timesteps": 1000,
      "prediction_type": "epsilon",
      "sample_max_value": 1.0,
      "set_alpha_to_one": false,
      "skip_prk_steps": true,
      "steps_offset": 1,
      "timestep_spacing": "leading",
      "trained_betas": null,
      "use_karras_sigmas": false
    }
    """

    func parse(_ json: String) throws -> SchedulerConfig { try SchedulerConfig(json: Data(json.utf8)) }

    func testParsesSDXLConfig() throws {
        let c = try parse(Self.sdxlJSON)
        XCTAssertEqual(c.className, "EulerDiscreteScheduler")
        XCTAssertEqual(c.numTrainTimesteps, 1000)
        XCTAssertEqual(c.betaStart, 0.00085)
        XCTAssertEqual(c.betaEnd, 0.012)
        XCTAssertEqual(c.betaSchedule, .scaledLinear)
        XCTAssertEqual(c.predictionType, .epsilon)
        XCTAssertEqual(c.timestepSpacing, .leading)
        XCTAssertEqual(c.stepsOffset, 1)
        XCTAssertFalse(c.clipSample)
        XCTAssertFalse(c.setAlphaToOne)
        XCTAssertFalse(c.useKarrasSigmas)
        XCTAssertNil(c.trainedBetas)
        var expected = SchedulerConfig.sdxl
        expected.className = "EulerDiscreteScheduler"
        XCTAssertEqual(c, expected)
    }

    func testParsesDPMSolverOptionsAndPythonInfinity() throws {
        let c = try parse("""
        {"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3, "solver_type": "heun",
         "lower_order_final": false, "euler_at_final": true, "use_karras_sigmas": true,
         "final_sigmas_type": "sigma_min", "prediction_type": "v_prediction", "timestep_spacing": "trailing",
         "lambda_min_clipped": -Infinity, "variance_type": null, "some_future_key": [1, 2]}
        """)
        XCTAssertEqual(c.solverOrder, 3)
        XCTAssertEqual(c.solverType, "heun")
        XCTAssertFalse(c.lowerOrderFinal)
        XCTAssertTrue(c.eulerAtFinal)
        XCTAssertTrue(c.useKarrasSigmas)
        XCTAssertEqual(c.finalSigmasType, .sigmaMin)
        XCTAssertEqual(c.predictionType, .vPrediction)
        XCTAssertEqual(c.timestepSpacing, .trailing)
        XCTAssertEqual(c.lambdaMinClipped, -.infinity)
        XCTAssertNoThrow(try DPMSolverMultistepScheduler(config: c))
    }

    func assertError(_ json: String, key: String, mentions needle: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try parse(json), file: file, line: line) { error in
            guard let e = error as? SchedulerConfigError else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertEqual(e.key, key, file: file, line: line)
            XCTAssertTrue(e.description.contains(key) && e.description.contains(needle), e.description, file: file, line: line)
        }
    }

    func testUnsupportedValuesNameTheKey() {
        assertError(#"{"beta_schedule": "sigmoid"}"#, key: "beta_schedule", mentions: "scaled_linear")
        assertError(#"{"prediction_type": "flow_prediction"}"#, key: "prediction_type", mentions: "v_prediction")
        assertError(#"{"timestep_spacing": "karras"}"#, key: "timestep_spacing", mentions: "trailing")
        assertError(#"{"final_sigmas_type": "denoise_to_zero"}"#, key: "final_sigmas_type", mentions: "sigma_min")
        assertError(#"{"num_train_timesteps": "many"}"#, key: "num_train_timesteps", mentions: "integer")
        assertError(#"{"use_karras_sigmas": 1.5}"#, key: "use_karras_sigmas", mentions: "true or false")
        assertError(#"{"trained_betas": [0.1, 0.2]}"#, key: "trained_betas", mentions: "1000")
    }

    func testSamplerSpecificValuesAreCheckedWhenTheSamplerIsBuilt() throws {
        func fails<S>(_ make: (SchedulerConfig) throws -> S, _ json: String, key: String,
                      file: StaticString = #filePath, line: UInt = #line) throws {
            let c = try parse(json)
            XCTAssertThrowsError(try make(c), file: file, line: line) { error in
                XCTAssertEqual((error as? SchedulerConfigError)?.key, key, "\(error)", file: file, line: line)
            }
        }
        try fails(DPMSolverMultistepScheduler.init, #"{"solver_order": 4}"#, key: "solver_order")
        try fails(DPMSolverMultistepScheduler.init, #"{"algorithm_type": "sde-dpmsolver++"}"#, key: "algorithm_type")
        try fails(DPMSolverMultistepScheduler.init, #"{"solver_type": "bh3"}"#, key: "solver_type")
        try fails(DPMSolverMultistepScheduler.init, #"{"thresholding": true}"#, key: "thresholding")
        try fails(DPMSolverMultistepScheduler.init, #"{"use_lu_lambdas": true}"#, key: "use_lu_lambdas")
        try fails(EulerDiscreteScheduler.init, #"{"interpolation_type": "log_linear"}"#, key: "interpolation_type")
        try fails(DDIMScheduler.init, #"{"thresholding": true}"#, key: "thresholding")
        // Keys of another sampler do not stop this one, as in diffusers.
        XCTAssertNoThrow(try EulerDiscreteScheduler(config: try parse(#"{"solver_order": 4, "algorithm_type": "sde-dpmsolver++"}"#)))
        // UniPC's solver names map to midpoint, as diffusers maps them.
        XCTAssertEqual(try DPMSolverMultistepScheduler(config: try parse(#"{"solver_type": "bh2"}"#)).solverType, .midpoint)
    }

    func testRoundTripsThroughJSON() throws {
        var c = SchedulerConfig.sdxl
        c.solverOrder = 3
        c.useKarrasSigmas = true
        c.predictionType = .vPrediction
        let data = try JSONEncoder().encode(c)
        XCTAssertEqual(try SchedulerConfig(json: data), c)
    }

    func testMissingKeysTakeSDXLValues() throws {
        XCTAssertEqual(try parse("{}"), SchedulerConfig.sdxl)
    }
}
