module github.com/clearml-go/clearml-agent

go 1.26.0

require github.com/NVIDIA/go-nvml v0.13.4-1

require golang.org/x/sys v0.50.0
