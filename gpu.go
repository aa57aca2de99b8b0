package main

import "strings"

// gpuEnv sets the GPU visibility variables a task sees, as the reference
// does for --gpus and --cpu-only (agent-execute.md §5). env is modified.
func gpuEnv(env map[string]string, gpus string, cpuOnly bool) {
	env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
	if env["KUBERNETES_SERVICE_HOST"] != "" || env["KUBERNETES_PORT"] != "" {
		return
	}
	switch {
	case cpuOnly:
		env["CUDA_VISIBLE_DEVICES"] = "none"
		env["NVIDIA_VISIBLE_DEVICES"] = "none"
	case strings.EqualFold(gpus, "all"):
		delete(env, "CUDA_VISIBLE_DEVICES")
		env["NVIDIA_VISIBLE_DEVICES"] = "all"
	case gpus != "":
		v := strings.ReplaceAll(gpus, ".", ":")
		env["CUDA_VISIBLE_DEVICES"] = v
		env["NVIDIA_VISIBLE_DEVICES"] = v
	case env["CUDA_VISIBLE_DEVICES"] != "" && env["NVIDIA_VISIBLE_DEVICES"] == "":
		env["NVIDIA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"]
	}
}
