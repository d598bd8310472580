enum ConvBench { static var cases: [BenchCase] { [] } }  // filled by the conv2d work
