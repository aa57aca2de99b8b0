# A stand-in torch for the dry run of device-check.sh: CUDA devices are
# CUDA_VISIBLE_DEVICES, and an allocation is told to the fake nvidia-smi.
import atexit, os
__version__ = "0.fake"
_state = os.environ.get("FAKE_SMI_STATE", "/tmp/clearml-fake-gpu-state")
uint8 = "uint8"
class _Cuda:
    def device_count(self):
        return len([x for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x])
    def synchronize(self):
        pass
    def get_device_name(self, i):
        return "Fake H100"
cuda = _Cuda()
class _T:
    def fill_(self, v):
        return self
    def __matmul__(self, o):
        return self
def empty(n, dtype=None, device=None):
    open(_state, "w").write(str(n >> 20))
    atexit.register(lambda: open(_state, "w").write("0"))
    return _T()
def randn(*a, **k):
    return _T()
def tanh(x):
    return x
class version:
    cuda = "fake"
