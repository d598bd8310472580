/// Why a subject use case refused its input. Each description says what is wrong in the
/// terms of the request; the CLI words the fix with its own flags and commands.
/// Nothing is stored when one is thrown.
public enum SubjectError: Error, Equatable, CustomStringConvertible {
    /// The token is one of the class noun's words: the prompt phrase could not tell them apart.
    case tokenInClassNoun(token: String, classNoun: String)
    /// The token is an everyday English word (`CommonWords`) and the request did not allow it.
    case commonWordToken(token: String)
    case tooFewPhotos(given: Int, classNoun: String)
    /// `given` files hold only `distinct` different pictures.
    case tooFewDistinctPhotos(given: Int, distinct: Int)
    /// The photos that cannot be decoded or are too small, one problem each.
    case unusablePhotos(problems: [String])
    /// Removing the photo would leave `remaining`, fewer than `PhotoLimits.minimum`.
    case removalBelowMinimum(subject: String, remaining: Int)

    public var description: String {
        switch self {
        case .tokenInClassNoun(let token, let classNoun):
            return "the token '\(token)' is part of the class noun '\(classNoun)': prompts would read \"\(token) \(classNoun)\" and the token could not mean this particular \(classNoun). Choose a rare word as the token (such as 'sks')."
        case .commonWordToken(let token):
            return "the token '\(token)' is a common English word; the model already has a meaning for it, and training would fight that and change every prompt using it. Choose a rare word as the token (such as 'sks'), or allow the common word explicitly."
        case .tooFewPhotos(let given, let classNoun):
            return "a subject needs at least \(PhotoLimits.minimum) photos, got \(given). Give \(PhotoLimits.minimum)-\(PhotoLimits.recommendedMaximum) photos of the \(classNoun) from different angles and backgrounds."
        case .tooFewDistinctPhotos(let given, let distinct):
            return "a subject needs at least \(PhotoLimits.minimum) different photos; the \(given) files given hold only \(distinct) different pictures (some are copies of each other). Add more photos."
        case .unusablePhotos(let problems):
            let what = problems.count == 1 ? "1 photo cannot be used" : "\(problems.count) photos cannot be used"
            return "\(what); nothing was stored:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
                + "\nFix or leave out these files and run the command again."
        case .removalBelowMinimum(let subject, let remaining):
            return "removing it would leave \(subject) with \(remaining) photo\(remaining == 1 ? "" : "s"), fewer than the \(PhotoLimits.minimum) training needs. Add photos first, or allow it explicitly."
        }
    }
}
