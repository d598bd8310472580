import XCTest
import KoalaTestSupport
@testable import KoalaModels
