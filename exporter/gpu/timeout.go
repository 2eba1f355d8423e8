package gpu

import "time"

// DefaultTimeout bounds the NVML calls of a scrape (--collector.gpu.timeout):
// a healthy H100 answers all of them in about a millisecond.
const DefaultTimeout = 2 * time.Second
