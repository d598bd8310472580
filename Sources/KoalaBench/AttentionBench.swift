enum AttentionBench { static var cases: [BenchCase] { [] } }  // filled by the attention work
