package main

import (
	"errors"
	"net/http"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	smiBanner550 = `Fri Dec  6 02:45:07 2024
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
`
	smiBanner470 = `+-----------------------------------------------------------------------------+
| NVIDIA-SMI 470.82.01    Driver Version: 470.82.01    CUDA Version: 11.4     |
|-------------------------------+----------------------+----------------------+`
	smiQuery = "==============NVSMI LOG==============\nDriver Version                            : 580.65.06\nCUDA Version                              : 13.0\n"
	nvccOut  = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 11.8, V11.8.89\nBuild cuda_11.8.r11.8/compiler.31833905_0\n"
)

func TestCUDAParse(t *testing.T) {
	for in, want := range map[string]int{
		"11.8": 118, "11.8.0": 118, "10.0.130": 100, "12": 120, "9": 90, "118": 118, "102": 102, "60": 60,
		"12.10": 121, " 12.4 ": 124, "": -1, "abc": -1, "11.x": -1, "-1": -1,
	} {
		got, ok := cudaParseVersion(in)
		if (want < 0) == ok || (ok && got != want) {
			t.Errorf("cudaParseVersion(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for in, want := range map[string]int{smiBanner550: 124, smiBanner470: 114, smiQuery: 130,
		"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.": 0, "CUDA Version: N/A": 0} {
		if got, _ := cudaFromSMI(in); got != want {
			t.Errorf("cudaFromSMI(%.40q) = %d, want %d", in, got, want)
		}
	}
	if got, ok := cudaFromNvcc(nvccOut); !ok || got != 118 {
		t.Errorf("cudaFromNvcc = %d, %v", got, ok)
	}
	for in, want := range map[int]int{12040: 124, 11080: 118, 12000: 120, 13000: 130, 10010: 101, 0: 0} {
		if got, _ := cudaFromDriver(in); got != want {
			t.Errorf("cudaFromDriver(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestCUDADetectOrder(t *testing.T) {
	fail := errors.New("not here")
	driver := func() (int, error) { return 12020, nil }
	nvcc := func() (string, error) { return nvccOut, nil }
	smi := func() (string, error) { return smiBanner550, nil }
	for _, c := range []struct {
		name string
		s    cudaSources
		want int
		from string
	}{
		{"cpu-only wins", cudaSources{CPUOnly: true, Config: "11.8", Driver: driver}, 0, "cpu-only"},
		{"config first", cudaSources{Config: "11.7", Driver: driver, Nvcc: nvcc, SMI: smi}, 117, "config"},
		{"config 0 means detect", cudaSources{Config: "0", Driver: driver}, 122, "nvml"},
		{"driver before nvcc", cudaSources{Driver: driver, Nvcc: nvcc, SMI: smi}, 122, "nvml"},
		{"nvcc before nvidia-smi", cudaSources{Driver: func() (int, error) { return 0, fail }, Nvcc: nvcc, SMI: smi}, 118, "nvcc"},
		{"nvidia-smi last", cudaSources{Nvcc: func() (string, error) { return "", fail }, SMI: smi}, 124, "nvidia-smi"},
		{"nothing", cudaSources{SMI: func() (string, error) { return "", fail }}, 0, ""},
	} {
		got, from, warn := cudaDetect(c.s)
		if got != c.want || from != c.from || warn != "" {
			t.Errorf("%s: %d from %q (warning %q); want %d from %q", c.name, got, from, warn, c.want, c.from)
		}
	}
	if v, from, warn := cudaDetect(cudaSources{Config: "eleven", SMI: smi}); v != 124 || from != "nvidia-smi" || !strings.Contains(warn, `"eleven"`) {
		t.Errorf("bad config: %d %q %q", v, from, warn)
	}
	env := mapEnv(map[string]string{"CUDA_VERSION": "11.8.0", "TRAINS_CUDA_VERSION": ""})
	if got := cudaConfigValue("12.1", env); got != "11.8.0" {
		t.Errorf("CUDA_VERSION should win over the file: %q", got)
	}
	env = mapEnv(map[string]string{"CUDA_VERSION": "11.8.0", "CLEARML_CUDA_VERSION": "12.2"})
	if got := cudaConfigValue("", env); got != "12.2" {
		t.Errorf("CLEARML_CUDA_VERSION first: %q", got)
	}
	if got := cudaConfigValue(" 12.1 ", mapEnv(nil)); got != "12.1" {
		t.Errorf("the file's value: %q", got)
	}
}

func TestTorchIndexCandidates(t *testing.T) {
	got := torchIndexCandidates(torchIndexTemplate, 121)
	if len(got) != torchProbeDepth || got[0] != "https://download.pytorch.org/whl/cu121/" || got[14] != "https://download.pytorch.org/whl/cu107/" {
		t.Errorf("candidates for 121: %q", got)
	}
	if got := torchIndexCandidates("http://mirror/{0}/x-cu{}/", 3); !reflect.DeepEqual(got, []string{"http://mirror/3/x-cu3/", "http://mirror/2/x-cu2/", "http://mirror/1/x-cu1/", "http://mirror/0/x-cu0/"}) {
		t.Errorf("candidates for 3: %q", got)
	}
	if got := torchIndexCandidates(torchIndexTemplate, 0); !reflect.DeepEqual(got, []string{"https://download.pytorch.org/whl/cu0/"}) {
		t.Errorf("candidates for 0 (the reference probes cu0): %q", got)
	}
	for tmpl, want := range map[string]string{
		torchIndexTemplate:                     "https://download.pytorch.org/whl/cpu/",
		torchNightlyIndexTemplate:              "https://download.pytorch.org/whl/nightly/cpu/",
		"https://mirror/pytorch/cu{0}/simple/": "https://mirror/pytorch/cpu/simple/",
		"https://mirror/cuda-{}/":              "",
	} {
		if got := torchCPUIndex(tmpl); got != want {
			t.Errorf("torchCPUIndex(%q) = %q, want %q", tmpl, got, want)
		}
	}
	if got := torchFormat(torchPageTemplate, 118); got != "https://download.pytorch.org/whl/cu118/torch_stable.html" {
		t.Errorf("page: %q", got)
	}
	if !strings.Contains(torchNightlyPageTemplate, "nightly") || !strings.Contains(torchCPUPage, "/cpu/") {
		t.Error("templates")
	}
}

// TestTorchIndexProbing resolves against a loopback index laid out like
// download.pytorch.org and installs the relaxed pin with pip: the right
// build for each CUDA version, each candidate probed once.
func TestTorchIndexProbing(t *testing.T) {
	root := t.TempDir()
	x := newPyTestIndex(t)
	for _, local := range []string{"cu118", "cu121", "cpu"} {
		x.Add("/whl/"+local+"/", pyTestWheel(t, filepath.Join(root, local), pyWheel{Name: "torch", Version: "2.1.0+" + local}))
	}
	x.Add("/simple/", pyTestWheel(t, filepath.Join(root, "pypi"), pyWheel{Name: "torch", Version: "2.1.0"}))
	probes := 0
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &torchIndexResolver{
		Template: x.URL("/whl/") + "cu{}/",
		TTL:      time.Hour,
		Now:      func() time.Time { return clock },
		Probe: func(u string) bool {
			probes++
			resp, err := http.Get(u)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode/100 == 2
		},
	}
	cases := []struct {
		cuda   int
		index  string
		probed []string // new probes only: earlier answers are remembered
	}{
		{121, "/whl/cu121/", []string{"/whl/cu121/"}},
		{124, "/whl/cu121/", []string{"/whl/cu124/", "/whl/cu123/", "/whl/cu122/"}},
		{122, "/whl/cu121/", nil},
		{120, "/whl/cu118/", []string{"/whl/cu120/", "/whl/cu119/", "/whl/cu118/"}},
		{118, "/whl/cu118/", nil},
	}
	for _, c := range cases {
		x.Reset()
		idx, at, probed, ok := r.Resolve(c.cuda)
		if !ok || idx != x.URL(c.index) || !strings.HasSuffix(c.index, "cu"+strconv.Itoa(at)+"/") {
			t.Errorf("cuda %d: %q (cu%d, %v), want %s", c.cuda, idx, at, ok, c.index)
		}
		if got := x.Requests(); !reflect.DeepEqual(got, c.probed) && !(len(got) == 0 && len(c.probed) == 0) {
			t.Errorf("cuda %d: the index saw %q, want %q", c.cuda, got, c.probed)
		}
		if len(probed) != len(c.probed) {
			t.Errorf("cuda %d: Resolve reports probes %q", c.cuda, probed)
		}
	}
	// Nothing at or below: 15 probes, then not found; remembered until the TTL.
	if _, _, probed, ok := r.Resolve(116); ok || len(probed) != torchProbeDepth {
		t.Errorf("cuda 116: ok=%v after %d probes, want 15 failed ones", ok, len(probed))
	}
	before := probes
	r.Resolve(116)
	if probes != before {
		t.Errorf("failed probes were not remembered: %d new", probes-before)
	}
	clock = clock.Add(2 * time.Hour)
	if _, _, probed, _ := r.Resolve(121); len(probed) != 1 {
		t.Errorf("after the TTL, cu121 should be probed again: %q", probed)
	}

	// pip with the relaxed pin and the resolved index gets the build.
	py := pyNeedPython(t)
	venvPy := pyTestVenv(t, py, filepath.Join(root, "venv"))
	for _, c := range []struct {
		cuda int
		line string
		want string
	}{
		{124, "torch==2.1.0+cu118", "2.1.0+cu121"},
		{119, "torch==2.1.0", "2.1.0+cu118"},
		{0, "torch==2.1.0+cu121", "2.1.0+cpu"},
	} {
		index := torchCPUIndex(r.Template)
		if c.cuda > 0 {
			index, _, _, _ = r.Resolve(c.cuda)
		}
		line := torchRelaxPin(reqParse(c.line))
		out, err := pyTestPip(t, venvPy, "install", "--force-reinstall", "--index-url", x.URL("/simple/"), "--extra-index-url", index, line)
		if err != nil {
			t.Fatalf("cuda %d: pip install %q: %v\n%s", c.cuda, line, err, out)
		}
		if got := pyTestImport(t, venvPy, "torch"); got != c.want {
			t.Errorf("cuda %d, %q: installed %s, want %s", c.cuda, c.line, got, c.want)
		}
	}
}

func TestTorchRelaxPin(t *testing.T) {
	for in, want := range map[string]string{
		"torch==2.1.0+cu118":        "torch ==2.1.0.*",
		"torch==2.1.0":              "torch ==2.1.0.*",
		"torch == 1.13.0a0+936e930": "torch ==1.13.0.*",
		"torch==2.1":                "torch ==2.1",
		"torch==2.1.0.post1":        "torch ==2.1.0.*",
		"torch==2.1.2.3":            "torch ==2.1.2.*",
		"torchvision==0.16.0+cpu ; python_version >= '3.8'": "torchvision ==0.16.0.* ; python_version >= '3.8'",
		"torch[opt-einsum]==2.1.0":                          "torch[opt-einsum] ==2.1.0.*",
		"torch>=2.0":                                        "torch>=2.0",
		"torch>=2.0,<2.2":                                   "torch>=2.0,<2.2",
		"torch":                                             "torch",
		"torch~=2.1.0":                                      "torch~=2.1.0",
		"torch @ https://h/torch-2.1.0.whl":                 "torch @ https://h/torch-2.1.0.whl",
	} {
		if got := torchRelaxPin(reqParse(in)); got != want {
			t.Errorf("torchRelaxPin(%q) = %q, want %q", in, got, want)
		}
	}
	for _, n := range []string{"torch", "TorchVision", "torch_audio", "torchaudio", "torchtext", "torchcsprng"} {
		if !torchIsPackage(n) && n != "torch_audio" {
			t.Errorf("%s should be a PyTorch package", n)
		}
	}
	if torchIsPackage("torchmetrics") || torchIsPackage("pytorch-lightning") {
		t.Error("torchmetrics and pytorch-lightning come from PyPI")
	}
}

func TestTorchOldSetuptools(t *testing.T) {
	for in, want := range map[string]bool{
		"torch==1.10.0+cu113": true, "torch==1.11.0": false, "torch<1.11": true, "torch<1.12": false,
		"torch<=1.10.2": true, "torch~=1.10.0": true, "torch~=1.10": false, "torch==1.10.*": true,
		"torch>=1.8,<1.11": true, "torch>=1.8": false, "torch": false, "torchvision==0.9.0": false, "torch==2.1.0": false,
	} {
		if got := torchNeedsOldSetuptools(reqParse(in)); got != want {
			t.Errorf("torchNeedsOldSetuptools(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestTorchSatisfies(t *testing.T) {
	for _, c := range []struct {
		v, spec string
		want    bool
	}{
		{"2.1.0", "==2.1.0", true}, {"2.1.0+cu118", "==2.1.0", true}, {"2.1.1", "==2.1.0", false},
		{"2.1.1", "==2.1.*", true}, {"2.2.0", "==2.1.*", false}, {"2.1.0", ">=2.0,<2.2", true},
		{"2.2.0", ">=2.0,<2.2", false}, {"2.1.0", "~=2.1.0", true}, {"2.2.0", "~=2.1.0", false},
		{"2.2.0", "~=2.1", true}, {"1.13.0a0", "==1.13.0", true}, {"2.0", "!=2.0.0", false}, {"x", "==1", false},
	} {
		if got := torchSatisfies(c.v, c.spec); got != c.want {
			t.Errorf("torchSatisfies(%q, %q) = %v", c.v, c.spec, got)
		}
	}
}

func TestTorchPickWheel(t *testing.T) {
	page := []string{
		"cu118/torch-2.0.1%2Bcu118-cp311-cp311-linux_x86_64.whl",
		"cu118/torch-2.1.0%2Bcu118-cp310-cp310-linux_x86_64.whl",
		"cu118/torch-2.1.0%2Bcu118-cp311-cp311-linux_x86_64.whl",
		"cu118/torch-2.1.0%2Bcu118-cp311-cp311-win_amd64.whl",
		"cu118/torch-2.1.0%2Bcu118-cp311-cp311-linux_aarch64.whl",
		"cu118/torch-2.1.2%2Bcu118-cp311-cp311-linux_x86_64.whl",
		"cu118/torchvision-0.16.0%2Bcu118-cp311-cp311-linux_x86_64.whl",
		"/files/whl/cu118/torch-2.1.0+cu118-py3-none-any.whl#sha256=00",
		"not-a-wheel.tar.gz",
	}
	for _, c := range []struct {
		name, spec, py, machine string
		want, version           string
	}{
		{"torch", "==2.1.0+cu121", "cp311", "x86_64", page[2], "2.1.0"},
		{"torch", "==2.1.0", "cp310", "x86_64", page[1], "2.1.0"},
		{"torch", ">=2.0", "cp311", "x86_64", page[5], "2.1.2"},
		{"torch", "", "cp311", "aarch64", page[4], "2.1.0"},
		{"torchvision", "==0.16.0", "cp311", "x86_64", page[6], "0.16.0"},
		{"torch", "==2.3.0", "cp311", "x86_64", "", ""},
		{"torch", "==2.1.0", "cp39", "x86_64", page[7], "2.1.0"}, // a pure wheel fits any Python 3
		{"torch", "==2.1.0", "cp39", "aarch64", page[7], "2.1.0"},
		{"torch", "==2.0.1", "cp39", "x86_64", "", ""},
	} {
		link, v, ok := torchPickWheel(page, c.name, c.spec, c.py, "linux", c.machine)
		if link != c.want || v != c.version || ok != (c.want != "") {
			t.Errorf("pick %s%s %s %s: %q %q %v, want %q", c.name, c.spec, c.py, c.machine, link, v, ok, c.want)
		}
	}
	if w, ok := torchParseWheel(page[7]); !ok || w.Name != "torch" || w.Version != "2.1.0" || w.Local != "cu118" || w.Python != "py3" {
		t.Errorf("parse %q: %+v %v", page[7], w, ok)
	}
	if torchMachine("amd64") != "x86_64" || torchMachine("arm64") != "aarch64" || torchPyTag("3.11.7") != "cp311" || torchPyTag("3") != "" {
		t.Error("machine or python tag")
	}
	if got := torchStripLocal("==2.1.0+cu118,!=2.0.0+cpu"); got != "==2.1.0,!=2.0.0" {
		t.Errorf("torchStripLocal: %q", got)
	}
}

func TestTorchReplaceBack(t *testing.T) {
	url := "https://download.pytorch.org/whl/cu118/torch-2.1.0%2Bcu118-cp311-cp311-linux_x86_64.whl"
	frozen := []string{
		"numpy==1.26.4",
		"torch @ " + url,
		"torchvision==0.16.0+cu118",
		"# comment",
		"",
		"torchaudio @ file:///tmp/cache/torchaudio-2.1.0%2Bcu118-cp311-cp311-linux_x86_64.whl",
	}
	reps := []torchReplacement{
		{Name: "torch", Requested: "torch==2.1.0", Installed: url},
		{Name: "torchvision", Requested: "torchvision==0.16.0", Installed: "https://h/torchvision-0.16.0%2Bcu118-cp311-cp311-linux_x86_64.whl"},
		{Name: "torchaudio", Requested: "torchaudio @ file:///build/torchaudio-2.1.0-cp311-cp311-linux_x86_64.whl", Installed: "https://h/torchaudio-2.1.0%2Bcu118-cp311-cp311-linux_x86_64.whl", LocalFile: true},
	}
	got := torchReplaceBack(frozen, reps)
	want := []string{
		"numpy==1.26.4",
		"torch==2.1.0 # " + url,
		"torchvision==0.16.0+cu118 # https://h/torchvision-0.16.0%2Bcu118-cp311-cp311-linux_x86_64.whl",
		"# comment",
		"",
		"https://h/torchaudio-2.1.0%2Bcu118-cp311-cp311-linux_x86_64.whl",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("replace back:\n got %q\nwant %q", got, want)
	}
	if frozen[1] != "torch @ "+url {
		t.Error("the input was modified")
	}
	if got := torchReplaceBack(frozen, nil); !reflect.DeepEqual(got, frozen) {
		t.Error("no replacements should change nothing")
	}
}
