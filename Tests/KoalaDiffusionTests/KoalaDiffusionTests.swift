import XCTest
import KoalaTestSupport
@testable import KoalaDiffusion
