import XCTest
import KoalaTestSupport
@testable import KoalaImageIO
