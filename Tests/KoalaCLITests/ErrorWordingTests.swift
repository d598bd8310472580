import Foundation
@testable import KoalaApp
@testable import KoalaCLI
import KoalaStore
import KoalaTraining
import XCTest

/// Library errors say what is wrong; the CLI adds the flag or command that fixes it
/// (issue 15 item 6). The CLI wording of the store's errors moved here from the store
/// tests, which now check the library's own wording.
final class ErrorWordingTests: XCTestCase {
    static let storeErrors: [StoreError] = [
        .homeNotADirectory(path: "/h"), .homeNotWritable(path: "/h", reason: "EACCES"),
        .databaseTooNew(path: "/h/db", version: 9, supported: 3), .databaseUnreadable(path: "/h/db", reason: "garbage"),
        .databaseMissing(path: "/h/db", empty: true, subjectFolders: 2), .notKoalaBoothDatabase(path: "/h/db", reason: "tables"),
        .diskFull(path: "/h", available: 4096), .readOnly(path: "/h"), .unknownSubject(name: "rex"), .duplicateName(name: "rex"),
        .invalidName(name: "-", reason: "r"), .invalidToken(token: "a b", reason: "r"), .invalidClassNoun(classNoun: "", reason: "r"),
        .unknownRun(id: 3), .photoNotFound(subject: "rex", query: "abcd"), .ambiguousPhoto(subject: "rex", query: "ab", matches: ["a", "b"]),
        .fileUnreadable(path: "/p", reason: "r"), .fileOperationFailed(path: "/p", reason: "r"), .outsideHome(path: "/p", home: "/h"),
        .subjectBusy(name: "rex", attempted: "delete", pid: 42, runID: 7),
    ]

    /// No library message names a flag or a `koalabooth` command.
    func assertLibraryWording(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNil(text.range(of: #"(^|[\s(`])--[a-z]"#, options: .regularExpression), text, file: file, line: line)
        XCTAssertFalse(text.contains("koalabooth "), text, file: file, line: line)
        XCTAssertFalse(text.contains("KOALABOOTH_HOME"), text, file: file, line: line)
    }

    /// An override's error names the `train` flag that gave it (the library names the key).
    func testRecipeOverrideErrorsNameTheFlag() {
        func cli(_ o: RecipeOverrides, on recipe: TrainingRecipe = TrainingRecipe()) -> String {
            do { _ = try recipe.applying(o) } catch { return "\(ErrorWording.cli(error))" }
            XCTFail("expected an error for \(o)")
            return ""
        }
        XCTAssertEqual(cli(RecipeOverrides(learningRate: -1)), "--learning-rate: optim.learning_rate must be > 0 and <= 1, got -1")
        XCTAssertTrue(cli(RecipeOverrides(resolution: 100)).hasPrefix("--resolution: data.resolution"))
        XCTAssertTrue(cli(RecipeOverrides(maxSteps: 0)).hasPrefix("--max-steps: train.max_steps"))
        XCTAssertTrue(cli(RecipeOverrides(rank: 5000)).hasPrefix("--rank: model.lora.rank"))
        XCTAssertTrue(cli(RecipeOverrides(seed: UInt64.max)).hasPrefix("--seed: train.seed"))
        var full = TrainingRecipe()
        full.model.train = .full
        XCTAssertTrue(cli(RecipeOverrides(rank: 8), on: full).contains("--rank"))
    }

    func testStoreErrorsNameNoFlagsAndTheCLIAddsThem() {
        for e in Self.storeErrors { assertLibraryWording(e.description) }
        let cli = { (e: StoreError) in ErrorWording.text(e) }
        XCTAssertTrue(cli(.databaseMissing(path: "/h/db", empty: true, subjectFolders: 1)).contains("KOALABOOTH_HOME"))
        XCTAssertTrue(cli(.notKoalaBoothDatabase(path: "/h/db", reason: "note")).contains("KOALABOOTH_HOME"))
        XCTAssertTrue(cli(.readOnly(path: "/h")).contains("subject list"))
        XCTAssertTrue(cli(.homeNotWritable(path: "/h", reason: "EACCES")).contains("--home"))
        XCTAssertTrue(cli(.unknownSubject(name: "rex")).contains("`koalabooth subject list`"))
        XCTAssertTrue(cli(.subjectBusy(name: "rex", attempted: "delete", pid: 42, runID: 7)).contains("`koalabooth train rex --resume`"))
        XCTAssertTrue(cli(.diskFull(path: "/h", available: nil)).contains("`koalabooth doctor`"))
        // Both say what is wrong.
        for e in Self.storeErrors {
            let head = e.description.prefix(while: { !".;(,".contains($0) })
            XCTAssertTrue(cli(e).hasPrefix(head), "\(cli(e)) vs \(e.description)")
        }
    }

    func testAppErrorsNameNoFlagsAndTheCLIAddsThem() {
        let generation: [GenerationRequestError] = [
            .notFinite(.guidance, .nan), .karrasWithDDIM, .tooFewSteps, .tooManyImages(20000), .loraScaleWithoutLoRA, .noModel,
            .runWithoutSubject, .loraWithSubject, .sideNotMultipleOf8(.width, 65), .sideOverLimit(.height, 8192),
            .noDataDirectory(subject: "rex", home: "/h"), .unknownRun(subject: "rex", runID: 3), .noFinishedCheckpoint(subject: "rex"),
            .checkpointMissing(path: "/c"), .modelMissing(path: "/m"), .loraMissing(path: "/l"), .latentsMissing(path: "/n"),
            .notEnoughDiskSpace(count: 2, width: 64, height: 64, bytes: 1e12, folder: "/o", free: 1e9),
        ]
        for e in generation { assertLibraryWording(e.description) }
        XCTAssertEqual(ErrorWording.text(GenerationRequestError.notFinite(.guidance, .nan)), "--guidance must be a finite number, got nan")
        XCTAssertEqual(ErrorWording.text(GenerationRequestError.sideOverLimit(.height, 8192)),
                       "--height 8192 is over the limit of 4096 pixels (SDXL-family models draw 1024 natively)")
        XCTAssertTrue(ErrorWording.text(GenerationRequestError.notEnoughDiskSpace(count: 2, width: 64, height: 64, bytes: 1e12, folder: "/o", free: 1e9))
            .hasPrefix("2 images of 64x64 can take up to 931.3 GiB, but /o has 0.9 GiB free; draw fewer images (--count)"))
        let subject: [SubjectError] = [.tokenInClassNoun(token: "dog", classNoun: "dog"), .commonWordToken(token: "the"),
                                       .removalBelowMinimum(subject: "rex", remaining: 2)]
        for e in subject { assertLibraryWording(e.description) }
        XCTAssertTrue(ErrorWording.text(SubjectError.commonWordToken(token: "the")).contains("pass --force"))
        assertLibraryWording(DoctorError.noDataDirectory(home: "/h").description)
        XCTAssertTrue(ErrorWording.text(DoctorError.noDataDirectory(home: "/h")).contains("Check --home / KOALABOOTH_HOME"))
    }
}
