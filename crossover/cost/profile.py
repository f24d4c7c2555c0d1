"""Performance per backend: from the config, else a `crossover bench` profile, else an estimate.

Every figure carries its source, printed beside it: a measured number and an estimate never look
alike. Estimates scale the model's multiply-adds (``model.gmacs``) by a per-backend effective rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossover import PROJECT, capacity
from crossover.backends import KINDS
from crossover.config import GRAVITON_FAMILIES, LoadedConfig, ModelConfig, vcpus
from crossover_serving.names import LAMBDA_MIB_PER_VCPU

PROFILES = PROJECT / "profiles"
MULTI_THREAD_EFFICIENCY = 0.85  # measured 2-thread speed-ups on these machines were 1.6-1.8x

# Effective fp32 GFLOP/s of one physical core running a convolutional network in ONNX Runtime on one thread, by the
# vector units the core has (bench/cpu.py measures this machine's; ISA_SOURCES says where each figure comes from).
# AMX (Sapphire Rapids on) and VNNI speed up bf16 and int8 only: an fp32 model runs on the AVX-512 FMAs.
CORE_GFLOPS = {"avx512": 190.0, "zen4": 105.0, "avx2": 100.0, "graviton2": 30.0, "graviton3": 62.0,
               "graviton4": 67.0}
ISA_SOURCES = {
    "avx512": "measured: ResNet-152 at 124-127 ms an image on one Sapphire Rapids core (186-202 GFLOP/s); "
              "Skylake to Emerald Rapids have the same two 512-bit FMA units",
    "zen4": "measured (bench/cpu.py): ResNet-50 79 ms, ResNet-152 214 ms an image on one AMD EPYC 4th gen core "
            "(103-108 GFLOP/s), AVX-512 on two 256-bit FMA pipes",
    "avx2": "AMD EPYC 2nd/3rd gen: the same two 256-bit FMA pipes as 4th gen, at ~95% of its clock",
    "graviton2": "Neoverse N1: two 128-bit FMA pipes at 2.5 GHz (40 GFLOP/s peak) at 75% of peak (the x86 cores "
                 "measured reach 75-90% of theirs)",
    "graviton3": "Neoverse V1: four 128-bit FMA pipes (two 256-bit SVE) at 2.6 GHz (83 peak) at 75% of peak",
    "graviton4": "Neoverse V2: four 128-bit FMA pipes at 2.8 GHz (90 peak) at 75% of peak",
}
# Which vector units each family's instances have, and whether a vCPU is a whole core (Graviton; AMD from the 7th
# generation, which runs without SMT) or one of a core's two hardware threads (every other x86 family).
FAMILY_ISA = {
    **dict.fromkeys(("c5", "m5", "r5", "c6i", "m6i", "r6i", "c7i", "m7i", "r7i", "g4dn", "inf1", "p4d", "p4de"),
                    "avx512"),
    **dict.fromkeys(("c7a", "m7a", "r7a"), "zen4"),
    **dict.fromkeys(("c5a", "m5a", "c6a", "m6a", "r6a", "g5", "g6", "g6e", "gr6", "inf2", "p3", "p3dn", "p5",
                     "p5e", "p5en"), "avx2"),
    **dict.fromkeys(("c6g", "m6g", "r6g"), "graviton2"),
    **dict.fromkeys(("c7g", "m7g", "r7g"), "graviton3"),
    **dict.fromkeys(("c8g", "m8g", "r8g"), "graviton4"),
}
WHOLE_CORE_VCPU = frozenset({"zen4", "graviton2", "graviton3", "graviton4"})
# Lambda's x86 hosts are not chosen: AVX2 is what it guarantees; arm64 functions run on Graviton2. A Lambda vCPU is
# counted as on EC2: on x86, one hardware thread (half a core: an FMA-bound thread gains next to nothing from
# its core's second thread, whoever runs there).
LAMBDA_ISA = {"x86_64": "avx2", "arm64": "graviton2"}
CPU_SOURCE = "estimate: {gflops:g} GFLOP/s per {isa} core ({source})"
# fp32 peak TFLOPS of the family's GPU, from NVIDIA's datasheets (T4 8.1; A10G 31.2, as the A10's; L4 30.3; L40S
# 91.6; V100 15.7; A100 19.5; H100 and H200 SXM 67), x 35%, what ONNX Runtime's CUDA provider reaches on batched CNNs
# (estimate). One GPU: the server runs the model on the instance's first, whatever size has more.
GPU_TFLOPS = {"g4dn": 8.1, "g5": 31.2, "g6": 30.3, "gr6": 30.3, "g6e": 91.6, "p3": 15.7, "p3dn": 15.7, "p4d": 19.5,
              "p4de": 19.5, "p5": 67.0, "p5e": 67.0, "p5en": 67.0}
GPU_EFFICIENCY = 0.35
GPU_SOURCE = "estimate: NVIDIA datasheet fp32 peak of one GPU x 35% (ONNX Runtime CUDA, batched)"
# Elastic Inference fp32 TFLOPS (AWS documentation) x 50%.
EIA_TFLOPS = {"eia1.medium": 1.0, "eia1.large": 2.0, "eia1.xlarge": 4.0}
EIA_SOURCE = "estimate: EI fp32 TFLOPS (AWS docs) x 50%"
# AWS Neuron performance pages: ResNet-152 at 838 img/s on inf2.xlarge (batch 1); ResNet-50 at
# 2,207 img/s on inf1.xlarge; scaled by multiply-adds to other models.
NEURON_ANCHORS = {"inf2": (838.0, 11.51), "inf1": (2207.0, 4.09)}
NEURON_SOURCE = "estimate: AWS Neuron published ResNet throughput, scaled by multiply-adds and chips"
NEURON_CHIPS = {"inf1.6xlarge": 4, "inf1.24xlarge": 16, "inf2.24xlarge": 6, "inf2.48xlarge": 12}  # others: 1
# What to do when a backend has no figure ({section}: the config key that would give it one).
HOW_TO_MEASURE = ("set {section} to a measured figure, or model.gmacs (billions of multiply-adds per image; "
                  "ResNet-50 4.09, ResNet-152 11.51, MobileNetV2 0.30, EfficientNet-Lite0 0.39, AlexNet 0.71; "
                  "model zoos list it as GMACs, or GFLOPs = 2 x GMACs), or measure the model here with "
                  "`crossover bench <config>` (Lambda and CPU figures)")
# One instance's images/s when the config, a bench profile and model.gmacs all say nothing (a ResNet-50-class
# model at batch 1-8): what the scaling target falls back on, with a warning, until the model is measured.
LAMBDA_OVERHEAD_MS = 10.0  # decode + preprocess of a typical photo (bench/serving.py measures ~6-8 ms)
# A Lambda cold start, until `crossover bench` measures the model: the model arrives in one S3 GetObject
# stream (AWS's S3 performance guidelines: 85-90 MB/s per request); importing the handler took 0.27-0.40 s
# in a fresh interpreter here; ONNX Runtime loaded ResNet-152 (240 MB) in ~1 s and ResNet-50 (102 MB) in 0.4 s.
S3_MB_PER_S = 85.0
IMPORT_S = 0.4
LOAD_MB_PER_S = 240.0


@dataclass(frozen=True)
class Figure:
    value: float
    source: str


@dataclass(frozen=True)
class BenchProfile:
    """What `crossover bench` measured on one machine, with one inference thread."""

    path: Path
    machine: str
    latency_ms: float  # one image, end to end (decode + inference), one thread
    images_per_second: float  # best batched throughput, one thread
    init_s: float | None = None  # a cold start's imports and model load (profiles from before it: None)
    model_mb: float | None = None  # the artifact's size, when it was a local file
    isa: str | None = None  # the measuring machine's vector units (CORE_GFLOPS); profiles from before it: None

    def on(self, target: str) -> tuple[float, str]:
        """How much faster a core of ``target`` is than one of the measuring machine (by CORE_GFLOPS), and what
        that says; 1 where the profile does not say what measured it."""
        if self.isa is None or self.isa not in CORE_GFLOPS or self.isa == target:
            return 1.0, ""
        return CORE_GFLOPS[target] / CORE_GFLOPS[self.isa], f" x {CORE_GFLOPS[target]:g}/{CORE_GFLOPS[self.isa]:g} " \
            f"GFLOP/s for its {target} cores against the measuring {self.isa} one"

    @classmethod
    def read(cls, name: str, folder: Path = PROFILES) -> BenchProfile | None:
        path = folder / f"{name}.json"
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        init = data["import_s"] + data["load_s"] if "import_s" in data and "load_s" in data else None
        return cls(path=path, machine=data["machine"], latency_ms=data["latency_ms"],
                   images_per_second=data["images_per_second"], init_s=init, model_mb=data.get("model_mb"),
                   isa=data.get("isa"))


@dataclass(frozen=True)
class LoadFigure:
    """What bench/load.py measured: requests a second one server held at p99 <= ``p99_ms`` on
    ``cpus`` CPUs, through the whole HTTP path with real photos (profiles/<name>.load.json)."""

    requests_per_second: float
    p99_ms: float
    cpus: int
    machine: str

    @classmethod
    def read(cls, name: str, folder: Path = PROFILES) -> LoadFigure | None:
        """The load test's figure; None without one, or with one that held no load (nothing to plan by)."""
        path = folder / f"{name}.load.json"
        figure = cls(**json.loads(path.read_text())) if path.is_file() else None
        return figure if figure is not None and figure.requests_per_second > 0 and figure.cpus > 0 else None

    def write(self, name: str, folder: Path = PROFILES) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.load.json"
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        return path


@dataclass(frozen=True)
class Measured:
    """What was measured for one model, passed to the constructs (synth never reads profiles/ itself): the
    `crossover bench` profile and the bench/load.py load test; either may be missing."""

    bench: BenchProfile | None = None
    load: LoadFigure | None = None

    @classmethod
    def read(cls, name: str, folder: Path = PROFILES) -> Measured:
        return cls(BenchProfile.read(name, folder), LoadFigure.read(name, folder))


def on_host_cpus(config: ModelConfig, backend: str) -> bool:
    """Whether ``backend`` runs the ONNX model on its instances' CPUs: ``cpu``, and ``inferentia`` without
    a Neuron artifact (its NeuronCores then sit idle)."""
    return backend == "cpu" or (backend == "inferentia" and config.inferentia.neuron_artifact is None)


def measured_rate(config: ModelConfig, backend: str, load: LoadFigure | None) -> Figure | None:
    """Requests a second one instance may be planned for, from a load test, where one applies: a backend
    that runs the model on x86 host CPUs (what the test ran on), measured at a target no looser than the
    config's; scaled by vCPUs. None: plan with the queueing model (crossover.capacity)."""
    fleet = getattr(config, backend)
    if (not on_host_cpus(config, backend) or load is None or load.p99_ms > config.traffic.p99_ms
            or fleet.instance_type.split(".")[0] in GRAVITON_FAMILIES):
        return None
    cpus = vcpus(fleet.instance_type)
    return Figure(load.requests_per_second / load.cpus * cpus,
                  f"load test on {load.machine}: {load.requests_per_second:.1f} req/s at p99 <= {load.p99_ms:g} ms "
                  f"on {load.cpus} CPUs, scaled to {cpus} vCPUs of {fleet.instance_type}")


def planned_rate(config: ModelConfig, backend: str, throughput: float, load: LoadFigure | None) -> Figure:
    """Requests a second one realtime instance is planned for: the scaling policy's target (per minute,
    ``capacity.per_minute``) and the capacity `crossover cost` sizes the fleet with, from one place.
    The config's ``requests_per_minute_per_instance``, else a load test's measured capacity, else the
    queueing model on ``throughput`` (images/s)."""
    fleet = getattr(config, backend)
    if fleet.requests_per_minute_per_instance:
        return Figure(fleet.requests_per_minute_per_instance / 60,
                      f"config ({backend}.requests_per_minute_per_instance)")
    measured = measured_rate(config, backend, load)
    if measured:
        return measured
    share = capacity.utilisation(throughput, config.traffic.p99_ms)
    return Figure(throughput * share, f"{share:.0%} of {throughput:,.1f} img/s keeps p99 within "
                                      f"{config.traffic.p99_ms} ms (queueing model)")


def isa(instance_type: str) -> str:
    """The vector units an instance type's cores have (AVX2, the least of them, for a family not listed)."""
    return FAMILY_ISA.get(instance_type.split(".")[0], "avx2")


def _cores(instance_type: str, count: int | None = None) -> float:
    """Physical cores of ``count`` of its vCPUs (default: all): every vCPU where a vCPU is a core, half of them
    where it is a hardware thread."""
    return (vcpus(instance_type) if count is None else count) * (1.0 if isa(instance_type) in WHOLE_CORE_VCPU
                                                                  else 0.5)


def _effective(cores: float) -> float:
    """What ``cores`` cores do together, in one core's work: each beyond the first at MULTI_THREAD_EFFICIENCY."""
    return cores if cores <= 1 else cores * MULTI_THREAD_EFFICIENCY


def _estimate(gflop: float, isa_name: str, cores: float) -> tuple[float, str]:
    """Seconds an image on ``cores`` cores of ``isa_name``, and the figure's source."""
    rate = CORE_GFLOPS[isa_name]
    return gflop / (rate * _effective(cores)), CPU_SOURCE.format(gflops=rate, isa=isa_name,
                                                                  source=ISA_SOURCES[isa_name])


def _cpuinfo() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.read_text() if cpuinfo.is_file() else ""


def isa_of_host() -> str:
    """This machine's vector units, as CORE_GFLOPS names them (bench/cpu.py)."""
    info = _cpuinfo()
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    if "asimd" in info:  # an Arm core: Neoverse N1 (0xd0c), V1 (0xd40), V2 (0xd4f)
        return "graviton4" if "0xd4f" in info else "graviton3" if "0xd40" in info else "graviton2"
    if "avx512f" in flags:
        return "zen4" if "AuthenticAMD" in info else "avx512"
    return "avx2"


def host_cpu() -> str:
    info = _cpuinfo()
    return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown CPU")


def _lambda_cpus(memory_mib: int, architecture: str) -> float:
    """A function's cores: its vCPUs (one per LAMBDA_MIB_PER_VCPU, up to 6), counted as EC2's are."""
    share = min(6.0, memory_mib / LAMBDA_MIB_PER_VCPU)
    return share * (1.0 if LAMBDA_ISA[architecture] in WHOLE_CORE_VCPU else 0.5)


def lambda_latency_ms(config: ModelConfig, bench: BenchProfile | None) -> Figure | None:
    spec = config.lambda_
    if spec.latency_ms is not None:
        return Figure(spec.latency_ms, f"config (lambda.latency_ms at {spec.memory_mib} MiB)")
    cores = _lambda_cpus(spec.memory_mib, spec.architecture)
    if bench is not None:
        faster, why = bench.on(LAMBDA_ISA[spec.architecture])
        return Figure(bench.latency_ms / _effective(cores) / faster, f"bench on {bench.machine} (1 thread), scaled to "
                      f"{spec.memory_mib} MiB of Lambda ({cores:.2f} cores){why}")
    if config.model.gmacs is None:
        return None
    seconds, source = _estimate(2 * config.model.gmacs, LAMBDA_ISA[spec.architecture], cores)
    return Figure(seconds * 1000 + LAMBDA_OVERHEAD_MS, f"{source}; {spec.memory_mib} MiB = "
                  f"{spec.memory_mib / LAMBDA_MIB_PER_VCPU:.2f} vCPU = {cores:.2f} cores")


def lambda_init_ms(config: ModelConfig, bench: BenchProfile | None) -> Figure | None:
    """A Lambda cold start: the config's measured Init Duration, else imports and model load (measured by
    `crossover bench`, else estimated) plus the model's download from S3. None without the model's size."""
    spec = config.lambda_
    if spec.init_ms is not None:
        return Figure(spec.init_ms, "config (lambda.init_ms)")
    size = bench.model_mb if bench is not None and bench.model_mb else config.model.size_mb
    if size is None:
        return None
    if bench is not None and bench.init_s is not None:
        local, how = bench.init_s, f"bench on {bench.machine}: imports and load {bench.init_s:.2f} s"
    else:
        load = config.model.load_s or size / LOAD_MB_PER_S
        local = IMPORT_S + load
        how = (f"estimate: imports {IMPORT_S:g} s, load " + (f"{load:g} s (model.load_s)" if config.model.load_s
                                                               else f"{size:g} MB at {LOAD_MB_PER_S:g} MB/s"))
    return Figure((local + size / S3_MB_PER_S) * 1000,
                  f"{how}, download {size:g} MB at {S3_MB_PER_S:g} MB/s (one S3 GET stream)")


def images_per_second(config: ModelConfig, backend: str, bench: BenchProfile | None) -> Figure | None:
    """One instance's throughput on ``backend`` running what will run there: the host-CPU figure for
    ``inferentia`` without a Neuron artifact, the NeuronCores' with one."""
    fleet = getattr(config, backend)
    if fleet.images_per_second is not None:
        return Figure(fleet.images_per_second, f"config ({backend}.images_per_second)")
    family = fleet.instance_type.split(".")[0]
    host = on_host_cpus(config, backend)
    where = "" if backend == "cpu" else " (no inferentia.neuron_artifact: the model runs on the host CPUs)"
    if host and bench is not None:
        cores = _cores(fleet.instance_type)
        faster, why = bench.on(isa(fleet.instance_type))
        return Figure(bench.images_per_second * _effective(cores) * faster,
                      f"bench on {bench.machine} (1 thread), scaled to {cores:g} cores of {fleet.instance_type}"
                      + why + where)
    gmacs = config.model.gmacs
    if gmacs is None:
        return None
    gflop = 2 * gmacs
    if host:
        seconds, source = _estimate(gflop, isa(fleet.instance_type), _cores(fleet.instance_type))
        return Figure(1 / seconds, source + where)
    if backend == "gpu" and family in GPU_TFLOPS:
        return Figure(GPU_TFLOPS[family] * 1000 * GPU_EFFICIENCY / gflop, GPU_SOURCE)
    if backend == "eia":
        return Figure(EIA_TFLOPS[config.eia.accelerator] * 1000 * 0.5 / gflop, EIA_SOURCE)
    if backend == "inferentia" and family in NEURON_ANCHORS:
        throughput, anchor_gmacs = NEURON_ANCHORS[family]
        chips = NEURON_CHIPS.get(fleet.instance_type, 1)
        return Figure(throughput * anchor_gmacs / gmacs * chips, NEURON_SOURCE)
    return None


def environment_images_per_second(config: ModelConfig, bench: BenchProfile | None) -> Figure | None:
    """One ``lambda-managed`` execution environment's throughput: its vCPUs of the priced instance type's cores
    (the processes share them: more processes than vCPUs add no throughput)."""
    spec = config.lambda_managed
    if spec.images_per_second is not None:
        return Figure(spec.images_per_second, "config (lambda-managed.images_per_second)")
    name, cores = isa(spec.instance_type), _cores(spec.instance_type, spec.vcpus)
    where = f"{spec.vcpus} vCPUs ({cores:g} core{'' if cores == 1 else 's'}) of {spec.instance_type} an environment"
    if bench is not None:
        faster, why = bench.on(name)
        return Figure(bench.images_per_second * _effective(cores) * faster,
                      f"bench on {bench.machine} (1 thread), scaled to {where}{why}")
    if config.model.gmacs is None:
        return None
    seconds, source = _estimate(2 * config.model.gmacs, name, cores)
    return Figure(1 / seconds, f"{source}; {where}")


def placeholder_warning(config: ModelConfig, backend: str) -> str:
    return (f"{backend}: no throughput figure for {getattr(config, backend).instance_type}, so its scaling target "
            f"assumes a placeholder {KINDS[backend].placeholder_images_per_second:g} images/s per instance; "
            + HOW_TO_MEASURE.format(section=f"{backend}.images_per_second"))


def warnings(item: LoadedConfig, folder: Path = PROFILES) -> list[str]:
    """What `crossover validate` warns about: the config's own warnings, and every serving fleet whose scaling
    target would rest on a placeholder throughput."""
    config = item.config
    bench = BenchProfile.read(config.name, folder)
    return item.warnings + [placeholder_warning(config, b) for b in config.backends
                            if KINDS[b].fleet and images_per_second(config, b, bench) is None]
