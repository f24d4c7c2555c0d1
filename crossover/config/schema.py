"""The shared model config's schema: every section, its defaults and the rules across sections.

Backend sections are all optional with defaults, so moving a model between backends is exactly one
field: ``backend:``. A config is a ``ModelConfig`` whether read from YAML (crossover.config.loading) or
built in Python (field names or YAML keys: ``ModelConfig(lambda_=...)`` and ``{"lambda": ...}`` both work).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crossover.backends import KINDS
from crossover.shape import AZS, NAT_GATEWAYS
from crossover_serving.spec import InputSpec as ServedInput

SERVED_INPUT = ServedInput()

Backend = Literal["lambda", "gpu", "eia", "inferentia", "cpu", "lambda-managed"]
Service = Literal["realtime", "pipeline"]
# The Literal is what pydantic and mypy check against; crossover.backends is the table (tests/test_config.py
# checks that the two name the same backends, in the same order).

STACK_PREFIX = "ModelStack-"
# CloudFormation stack names: a letter, then letters, digits and hyphens, at most 128 characters.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_problem(name: str) -> str | None:
    """Why ``name`` cannot be an S3 bucket name (S3's naming rules), or None."""
    if not 3 <= len(name) <= 63:
        return f"a bucket name has 3 to 63 characters; {name!r} has {len(name)}"
    if not _BUCKET_CHARS.match(name):
        return f"a bucket name has only lowercase letters, digits, dots and hyphens; got {name!r}"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"a bucket name starts and ends with a letter or digit; got {name!r}"
    if ".." in name:
        return f"a bucket name has no two dots in a row; got {name!r}"
    if _IP_LIKE.match(name):
        return f"a bucket name is not an IP address; got {name!r}"
    if name.startswith(_BUCKET_PREFIXES) or name.endswith(_BUCKET_SUFFIXES):
        return f"{name!r} uses a prefix or suffix S3 reserves ({', '.join(_BUCKET_PREFIXES + _BUCKET_SUFFIXES)})"
    return None
_CERT_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$")


class _Strict(BaseModel):
    # strict: YAML "5" is not 5; extra="forbid": a misspelt key is an error, never ignored. validate_by_name:
    # a config built in Python may use the Python names of the YAML keys `lambda` and `from` (lambda_, from_).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_by_name=True)


PositiveInt = Annotated[int, Field(gt=0)]
Channels = Annotated[list[float], Field(min_length=3, max_length=3)]


class InputSpec(_Strict):
    """Preprocessing: resize the short side, centre-crop a square, then (pixel/255 - mean) / std. The defaults
    are the serving side's own (crossover_serving.spec), so a config and a spec that omit them agree."""

    size: PositiveInt = SERVED_INPUT.size
    resize: PositiveInt = SERVED_INPUT.resize
    mean: Channels = Field(default_factory=lambda: list(SERVED_INPUT.mean))
    std: Channels = Field(default_factory=lambda: list(SERVED_INPUT.std))
    layout: Literal["nchw", "nhwc"] = "nchw"

    @model_validator(mode="after")
    def _crop_fits(self) -> InputSpec:
        if self.resize < self.size:
            raise ValueError(f"resize must be >= size ({self.size}); got {self.resize}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0; got {self.std}")
        return self


class MxnetSource(_Strict):
    """An MXNet model as trained: symbol JSON and params, local paths or s3:// URIs."""

    symbol: str
    params: str
    input_name: str = "data"


class ModelSpec(_Strict):
    """``artifact`` is the ONNX file served. With ``format: mxnet`` it is where `crossover convert`
    writes the ONNX converted from ``mxnet``; the command then sets ``format: onnx``."""

    artifact: str
    format: Literal["onnx", "mxnet"] = "onnx"
    mxnet: MxnetSource | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    load_s: Annotated[float, Field(gt=0)] | None = None  # measured model load time (crossover bench)
    size_mb: Annotated[float, Field(gt=0)] | None = None  # the artifact's size: each Lambda cold start downloads it
    gmacs: Annotated[float, Field(gt=0)] | None = None  # billions of multiply-adds per image (cost estimates)
    input: InputSpec = Field(default_factory=InputSpec)
    labels: str = "imagenet"
    top_k: Annotated[int, Field(gt=0, le=20)] = 5


class Inputs(_Strict):
    """What a request or message may name instead of sending the image itself: objects under the ``s3``
    entries (a bucket, or bucket/prefix/) and, with ``https``, HTTPS URLs on the public internet.
    Nothing else is fetched, and the model's role may read exactly these S3 locations."""

    s3: list[str] = Field(default_factory=list)
    https: bool = False

    @field_validator("s3")
    @classmethod
    def _locations(cls, entries: list[str]) -> list[str]:
        """Each entry as ``bucket/`` or ``bucket/prefix/``: the form IAM grants and the fetcher match."""
        normalised = []
        for entry in entries:
            bucket, _, prefix = entry.removeprefix("s3://").partition("/")
            if (why := bucket_problem(bucket)) is not None:
                raise ValueError(f"expected a bucket or bucket/prefix/; {why}")
            if any(c in prefix for c in "*?"):
                raise ValueError(f"expected a plain prefix (no wildcards: everything under it is readable); "
                                 f"got {entry!r}")
            normalised.append(f"{bucket}/{prefix}" if not prefix or prefix.endswith("/") else f"{bucket}/{prefix}/")
        return normalised


class Traffic(_Strict):
    images_per_month: PositiveInt = 1_000_000
    p99_ms: PositiveInt = 500
    # Busiest hour's rate over the month's average: a realtime fleet follows a day of that peak (a cosine;
    # crossover.cost.model.day), between scaling.min and scaling.max.
    peak_to_average: Annotated[float, Field(ge=1, le=100)] = 3.0
    # Or the day itself: 24 hourly figures from midnight UTC in any unit (requests an hour, say), as crossover
    # advise observes them; its peak over its mean is then the peak_to_average.
    hourly: Annotated[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]],
                      Field(min_length=24, max_length=24)] | None = None
    image_kb: Annotated[float, Field(gt=0)] = 150.0  # mean image size (load balancer capacity units, NAT bytes)
    # How images arrive, as shares of them: by HTTPS URL (fetched through the NAT gateway, billed per GB) and from
    # S3 (through the VPC's free gateway endpoint: one GET each); the rest in the request body. A pipeline's
    # messages name their images: unless given, its share from S3 is what URLs leave.
    from_url: Annotated[float, Field(ge=0, le=1)] = 0.0
    from_s3: Annotated[float, Field(ge=0, le=1)] | None = None

    @model_validator(mode="after")
    def _shares(self) -> Traffic:
        if self.from_url + (self.from_s3 or 0) > 1 + 1e-9:
            raise ValueError(f"from_url ({self.from_url:g}) and from_s3 ({self.from_s3:g}) are shares of the same "
                             "images: together at most 1")
        return self

    @model_validator(mode="before")
    @classmethod
    def _peak_of_the_day(cls, data: Any) -> Any:
        hourly = data.get("hourly") if isinstance(data, dict) else None
        if not isinstance(hourly, list) or len(hourly) != 24 or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x < math.inf for x in hourly):
            return data  # the field's own checks say what is wrong
        if math.isinf(sum(hourly)):
            raise ValueError("hourly: the figures are too large to add up; give them in a smaller unit")
        if sum(hourly) / 24 <= 0:
            raise ValueError("hourly: expected some traffic in the day; all 24 hours are 0")
        peak = max(hourly) / (sum(hourly) / 24)
        given = data.get("peak_to_average")
        if isinstance(given, int | float) and abs(given - peak) > 0.01 * peak:
            raise ValueError(f"peak_to_average ({given:g}) disagrees with hourly, whose peak is {peak:.3g} times "
                             "its mean: leave peak_to_average out")
        return {**data, "peak_to_average": peak}


class Scaling(_Strict):
    min: Annotated[int, Field(ge=0)] = 1
    max: PositiveInt = 4

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class Endpoint(_Strict):
    """The realtime front door. Internal unless a certificate makes it public over HTTPS."""

    certificate_arn: Annotated[str, Field(pattern=_CERT_ARN.pattern)] | None = None
    # Who may reach an internal load balancer; None means the VPC's own CIDR.
    allowed_cidr: Annotated[str, Field(pattern=r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")] | None = None
    # The endpoint is the model's stable address: deleting it takes a deliberate step.
    deletion_protection: bool = True
    # How many services share the load balancer (a team's own: ModelService(load_balancer=..., path_prefix=...)):
    # the cost model charges each its share of the hourly fee.
    services_per_load_balancer: int = Field(default=1, ge=1)


class NetworkSpec(_Strict):
    """The shared VPC's way out to AWS. Every model of an app shares NetworkStack, so their configs must agree.

    ``nat_gateways: 0`` builds a NAT-free network: isolated private subnets, interface endpoints for what
    instances call (crossover.shape.PRIVATE_ENDPOINTS), and instance security groups that allow HTTPS to
    those and to S3 alone. Instances then reach no internet address at all, so requests cannot name images
    by http(s) URL there (S3 inputs and request bodies still work)."""

    nat_gateways: int = Field(default=NAT_GATEWAYS, ge=0, le=AZS)


class AlarmsSpec(_Strict):
    """Where alarms notify: an existing SNS topic, or (None) a topic the stack creates to subscribe to."""

    topic_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$")] | None = None


# CodeDeploy's predefined Lambda traffic shifts, by the names of its configurations.
LambdaTrafficShift = Literal[
    "canary-10-percent-5-minutes", "canary-10-percent-10-minutes", "canary-10-percent-15-minutes",
    "canary-10-percent-30-minutes", "linear-10-percent-every-1-minute", "linear-10-percent-every-2-minutes",
    "linear-10-percent-every-3-minutes", "linear-10-percent-every-10-minutes", "all-at-once"]


class RolloutSpec(_Strict):
    """How a deploy replaces what serves the model, and which alarms stop it and roll it back.

    Lambda: CodeDeploy moves the ``live`` alias to the new version in ``lambda_traffic`` steps and
    rolls back if a rollback alarm fires. Every backend: ``make deploy`` asks CloudFormation to watch
    the same alarms during the update and ``monitor_minutes`` after it, and to roll the whole update
    back (instances included) if one fires.
    """

    lambda_traffic: LambdaTrafficShift = "canary-10-percent-5-minutes"
    monitor_minutes: Annotated[int, Field(ge=0, le=180)] = 10  # CloudFormation's limit is 180


class PipelineSpec(_Strict):
    """The SQS-fed service: one queue in, one results bucket out, a dead-letter queue for what fails."""

    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 10
    max_batching_window_s: Annotated[int, Field(ge=0, le=300)] = 0  # Lambda's limit is 300 s
    max_receive_count: Annotated[int, Field(ge=1, le=1000)] = 3  # deliveries before the dead-letter queue
    visibility_timeout_s: Annotated[int, Field(ge=0, le=43_200)] | None = None  # default: 6 x lambda.timeout_s
    max_concurrency: Annotated[int, Field(ge=2, le=1000)] = 10  # concurrent Lambda batches
    backlog_s: PositiveInt = 300  # instances: how long a message may wait (sets backlog per instance)
    results_days: PositiveInt = 30  # results and error records expire after this

    def visibility_s(self, lambda_timeout_s: int) -> int:
        return self.visibility_timeout_s if self.visibility_timeout_s is not None else 6 * lambda_timeout_s


class LambdaSpec(_Strict):
    memory_mib: Annotated[int, Field(ge=128, le=10_240)] = 3008
    timeout_s: Annotated[int, Field(ge=1, le=900)] = 30
    reserved_concurrency: PositiveInt | None = 100
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    latency_ms: Annotated[float, Field(gt=0)] | None = None  # measured warm latency at memory_mib
    # Measured cold start: the Init Duration of a REPORT log line (imports, model download and load).
    init_ms: Annotated[float, Field(gt=0)] | None = None
    # Execution environments kept initialised (model loaded) on the live alias: a deploy that adds them
    # completes only once they are ready, so a move into Lambda meets them warm. Billed while configured.
    provisioned_concurrency: PositiveInt | None = None
    # With it, provisioned concurrency scales on its utilisation (target PROVISIONED_UTILISATION) from
    # provisioned_concurrency up to this many environments.
    provisioned_concurrency_max: PositiveInt | None = None
    # New execution environments resume from a snapshot taken after init (the model loaded) instead of
    # running init: cold starts skip the model's download and load. Versions only (the live alias is one).
    snapstart: bool = False

    @model_validator(mode="after")
    def _snapstart_or_provisioned(self) -> LambdaSpec:
        if self.snapstart and self.provisioned_concurrency:
            raise ValueError("snapstart and provisioned_concurrency: Lambda does not combine them; choose "
                             "snapshots (a restore on each cold start) or environments kept warm (billed always)")
        return self

    @model_validator(mode="after")
    def _provisioned_range(self) -> LambdaSpec:
        top = self.provisioned_concurrency_max
        if top is not None and (self.provisioned_concurrency is None or top < self.provisioned_concurrency):
            raise ValueError(f"provisioned_concurrency_max ({top}) scales provisioned concurrency up from "
                             "provisioned_concurrency: set provisioned_concurrency too, at most "
                             f"{top}")
        if top is not None and self.reserved_concurrency is not None and top > self.reserved_concurrency:
            raise ValueError(f"provisioned_concurrency_max ({top}) must be <= reserved_concurrency "
                             f"({self.reserved_concurrency}): Lambda refuses to provision more than is reserved")
        return self

    @model_validator(mode="after")
    def _provisioned_within_reserved(self) -> LambdaSpec:
        if self.provisioned_concurrency and self.reserved_concurrency and \
                self.provisioned_concurrency > self.reserved_concurrency:
            raise ValueError(f"provisioned_concurrency ({self.provisioned_concurrency}) must be <= "
                             f"reserved_concurrency ({self.reserved_concurrency}): Lambda refuses to provision more "
                             "than is reserved")
        return self


class SpotSpec(_Strict):
    """Spot instances above an on-demand floor: ``on_demand_base`` instances always on demand, then
    ``on_demand_percent_above_base`` percent of the rest; spot from ``instance_type`` and ``instance_types``
    (more types, more spot pools to draw from), chosen by ``allocation``. The group rebalances capacity
    ahead of interruptions, and an instance told it will be interrupted leaves cleanly (docs/backends.md)."""

    on_demand_base: Annotated[int, Field(ge=0)] = 0
    on_demand_percent_above_base: Annotated[int, Field(ge=0, le=100)] = 0
    instance_types: list[str] = Field(default_factory=list)  # besides instance_type, which is always one
    allocation: Literal["price-capacity-optimized", "capacity-optimized", "lowest-price"] = "price-capacity-optimized"


class FleetSpec(_Strict):
    """What every instance backend shares. ``images_per_second`` is one instance's throughput (measure
    it with `crossover bench`); it and ``traffic.p99_ms`` set the scaling target unless
    ``requests_per_minute_per_instance`` overrides it."""

    FAMILIES: ClassVar[tuple[str, ...]] = ()
    KIND: ClassVar[str] = ""
    instance_type: str
    ami_id: Annotated[str, Field(pattern=r"^ami-[0-9a-f]{8,17}$")] | None = None
    health_grace_s: Annotated[int, Field(ge=60, le=7200)] = 900
    root_volume_gib: Annotated[int, Field(ge=8, le=2048)] = 30
    images_per_second: Annotated[float, Field(gt=0)] | None = None
    requests_per_minute_per_instance: PositiveInt | None = None
    spot: SpotSpec | None = None

    @field_validator("instance_type")
    @classmethod
    def _family(cls, value: str) -> str:
        return instance_type_of(value, cls.FAMILIES, cls.KIND)

    @model_validator(mode="after")
    def _spot_types_fit(self) -> FleetSpec:
        """Every spot type runs what ``instance_type`` runs: the same kind of instance, the same architecture
        (one image per group), for Inferentia the same family (a Neuron model is compiled for inf1 or inf2),
        and at least as many vCPUs (memory grows with size within a family: a smaller size may not hold
        the model and its batch)."""
        if self.spot is None:
            return self
        family = self.instance_type.split(".", 1)[0]
        for other in self.spot.instance_types:
            try:
                self._family(other)
            except ValueError as e:
                raise ValueError(f"spot.instance_types: {e}") from None
            theirs = other.split(".", 1)[0]
            if (theirs in GRAVITON_FAMILIES) != (family in GRAVITON_FAMILIES):
                raise ValueError(f"spot.instance_types: {other} is not the architecture of {self.instance_type} "
                                 "(one image serves the group: Graviton and x86 types cannot mix)")
            if family in _FLEET_KINDS["inferentia"][1] and theirs != family:
                raise ValueError(f"spot.instance_types: {other} is not {family}: a model compiled with Neuron "
                                 f"for {family} does not run on {theirs}")
            if vcpus(other) < vcpus(self.instance_type):
                raise ValueError(f"spot.instance_types: {other} has fewer vCPUs ({vcpus(other)}) than "
                                 f"{self.instance_type} ({vcpus(self.instance_type)}), and less memory for the "
                                 "model and its batch")
        return self


def instance_type_of(value: str, families: tuple[str, ...], kind: str) -> str:
    """``value`` if it is an instance type of one of ``families`` (``kind`` names them) whose vCPUs crossover can
    count; else a ValueError that names the backend it belongs to, if another's."""
    family = value.split(".", 1)[0]
    if "." not in value or family not in families:
        hint = next((f"; {value} is {what} type: use backend: {name}"
                     for name, (what, accepted) in _FLEET_KINDS.items()
                     if family in accepted and family not in families), "")
        raise ValueError(f"expected {kind} instance type ({', '.join(families)}); got {value!r}{hint}")
    vcpus(value)  # a size it cannot count is refused here, not in the middle of a synth
    return value


_SIZE = re.compile(r"(?:(\d*)xlarge|metal-(\d+)xl|(large)|(medium))")


def vcpus(instance_type: str) -> int:
    """An instance type's vCPUs from its size (medium 1, large 2, xlarge 4, <N>xlarge and metal-<N>xl 4N);
    ValueError for a size that does not say (a bare `metal`, whose vCPUs differ by family)."""
    match = _SIZE.fullmatch(instance_type.split(".", 1)[-1])
    if match is None:
        raise ValueError(f"expected a size whose vCPUs crossover can count (medium, large, xlarge, <N>xlarge, "
                         f"metal-<N>xl); got {instance_type!r}")
    n, metal, large, medium = match.groups()
    return 1 if medium else 2 if large else 4 * int(n or metal or 1)


# backend -> (what its instances are, the instance families it accepts)
_FLEET_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gpu": ("a GPU", ("g4dn", "g5", "g6", "g6e", "gr6", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en")),
    "cpu": ("a CPU", ("c5", "c6i", "c6a", "c7i", "c7a", "c6g", "c7g", "c8g", "m6i", "m7i", "m7a", "m7g", "m8g")),
    "inferentia": ("an Inferentia", ("inf1", "inf2")),
    "eia": ("a C5", ("c5",)),
}


class GpuSpec(FleetSpec):
    FAMILIES, KIND = _FLEET_KINDS["gpu"][1], _FLEET_KINDS["gpu"][0]
    instance_type: str = "g4dn.xlarge"
    max_batch: PositiveInt = 8
    root_volume_gib: Annotated[int, Field(ge=75, le=2048)] = 100  # the Deep Learning AMI's snapshot is 75 GiB


class EiaSpec(FleetSpec):
    FAMILIES, KIND = _FLEET_KINDS["eia"][1], _FLEET_KINDS["eia"][0]
    instance_type: str = "c5.large"
    accelerator: str = "eia1.medium"

    @field_validator("accelerator")
    @classmethod
    def _eia1_only(cls, value: str) -> str:
        if value not in EIA_ACCELERATORS:
            eia2 = value.startswith("eia2.")
            why = " (CloudFormation launch templates only ever accepted eia1 types)" if eia2 else ""
            raise ValueError(f"expected one of {', '.join(EIA_ACCELERATORS)}; got {value!r}{why}")
        return value


class InferentiaSpec(FleetSpec):
    """``neuron_artifact`` is the model compiled for NeuronCores (torch_neuronx.trace, saved with
    torch.jit.save): an s3:// URI or a local file. Without it the ONNX model runs on the host CPUs."""

    FAMILIES, KIND = _FLEET_KINDS["inferentia"][1], _FLEET_KINDS["inferentia"][0]
    instance_type: str = "inf2.xlarge"
    neuron_artifact: str | None = None
    root_volume_gib: Annotated[int, Field(ge=75, le=2048)] = 100  # the Neuron DLAMI's snapshot


class CpuSpec(FleetSpec):
    FAMILIES, KIND = _FLEET_KINDS["cpu"][1], _FLEET_KINDS["cpu"][0]
    instance_type: str = "c7i.large"
    max_batch: PositiveInt = 4


# Memory per vCPU of each family's instances, by its class letter (c: compute optimised, m: general purpose).
GIB_PER_VCPU = {"c": 2, "m": 4}
PROCESS_MIB = 1024  # the least one serving process needs: Python, ONNX Runtime, a ResNet-sized model, one decode


class LambdaManagedSpec(_Strict):
    """The ``lambda-managed`` backend: the ``lambda`` backend's function (the same bundle, handler and
    ``lambda.timeout_s``) on a Lambda Managed Instances capacity provider in the model's VPC.

    Lambda launches instances of ``instance_type`` (and ``instance_types``; their architecture is the function's)
    and runs execution environments of ``memory_mib`` on them, ``memory_gib_per_vcpu`` GiB per vCPU, each with
    ``per_environment_concurrency`` Python processes (one request each). Every published version keeps
    ``min_environments`` to ``max_environments`` environments, and the provider at most ``max_vcpus`` vCPUs.
    ``images_per_second`` is one environment's measured throughput (else estimated from model.gmacs)."""

    FAMILIES: ClassVar[tuple[str, ...]] = tuple(f for f in _FLEET_KINDS["cpu"][1] if f != "c5")
    KIND: ClassVar[str] = "a current-generation CPU"
    instance_type: str = "c7i.xlarge"
    instance_types: list[str] = Field(default_factory=list)
    memory_mib: Annotated[int, Field(ge=2048, le=32_768)] = 4096
    memory_gib_per_vcpu: Literal[2, 4, 8] = 2
    # CPU-bound inference gains nothing from more processes than vCPUs, and each holds its own copy of the model:
    # one process per environment, its vCPUs as ONNX Runtime threads, answers each request fastest.
    per_environment_concurrency: Annotated[int, Field(ge=1, le=1600)] = 1
    min_environments: Annotated[int, Field(ge=1, le=15_000)] = 3  # AWS's default: one per AZ of three
    max_environments: Annotated[int, Field(ge=1, le=15_000)] = 30
    max_vcpus: Annotated[int, Field(ge=12, le=15_000)] = 400  # the provider's cap (AWS: 400; CDK refuses < 12)
    images_per_second: Annotated[float, Field(gt=0)] | None = None

    @field_validator("instance_type")
    @classmethod
    def _family(cls, value: str) -> str:
        return instance_type_of(value, cls.FAMILIES, cls.KIND)

    @property
    def vcpus(self) -> int:
        """An execution environment's vCPUs."""
        return self.memory_mib // (self.memory_gib_per_vcpu * 1024)

    @property
    def architecture(self) -> Literal["x86_64", "arm64"]:
        return "arm64" if self.instance_type.split(".")[0] in GRAVITON_FAMILIES else "x86_64"

    def environments_per_instance(self, instance_type: str) -> int:
        """How many environments one instance of ``instance_type`` holds, by vCPUs and by memory."""
        cpus = vcpus(instance_type)
        memory_gib = cpus * GIB_PER_VCPU[instance_type[0]]
        return min(cpus // self.vcpus, int(memory_gib * 1024 // self.memory_mib))

    @model_validator(mode="after")
    def _fits(self) -> LambdaManagedSpec:
        unit = self.memory_gib_per_vcpu * 1024
        if self.memory_mib % unit:
            raise ValueError(f"memory_mib: expected a multiple of memory_gib_per_vcpu x 1024 = {unit} (an execution "
                             f"environment has whole vCPUs); got {self.memory_mib}")
        per_process = self.memory_mib // self.per_environment_concurrency
        if per_process < PROCESS_MIB:
            raise ValueError(f"per_environment_concurrency: each of the {self.per_environment_concurrency} processes "
                             f"would have {per_process} MiB of the environment's {self.memory_mib}, under the "
                             f"{PROCESS_MIB} MiB one needs (it loads its own copy of the model); lower it or raise "
                             "memory_mib")
        if self.min_environments > self.max_environments:
            raise ValueError(f"min_environments ({self.min_environments}) must be <= max_environments "
                             f"({self.max_environments})")
        for other in [self.instance_type, *self.instance_types]:
            try:
                instance_type_of(other, self.FAMILIES, self.KIND)
            except ValueError as e:
                raise ValueError(f"instance_types: {e}") from None
            if (other.split(".")[0] in GRAVITON_FAMILIES) != (self.architecture == "arm64"):
                raise ValueError(f"instance_types: {other} is not the architecture of {self.instance_type} "
                                 f"({self.architecture}): a capacity provider runs one")
            if self.environments_per_instance(other) < 1:
                raise ValueError(f"{'instance_type' if other == self.instance_type else 'instance_types'}: {other} "
                                 f"cannot hold one execution environment of {self.vcpus} vCPUs and "
                                 f"{self.memory_mib} MiB; pick a larger size or lower memory_mib")
        # During a traffic shift two versions each keep min_environments running, on at least three instances.
        needed = max(3, math.ceil(2 * self.min_environments / self.environments_per_instance(self.instance_type)))
        if self.max_vcpus < needed * vcpus(self.instance_type):
            raise ValueError(f"max_vcpus: two versions' min_environments ({self.min_environments} each, during a "
                             f"traffic shift) need {needed} x {self.instance_type} = "
                             f"{needed * vcpus(self.instance_type)} vCPUs; got {self.max_vcpus}, and a version that "
                             "cannot start them never becomes active")
        return self


# Backends AWS no longer sells: priced for comparison, never recommended, switched to only with --force.
RETIRED = frozenset({"eia"})
EIA_ACCELERATORS = ("eia1.medium", "eia1.large", "eia1.xlarge")
GRAVITON_FAMILIES = frozenset({"c6g", "c7g", "c8g", "m7g", "m8g"})


class Canary(_Strict):
    """A move in progress: ``from`` (the backend serving before) keeps 100 - ``percent`` of the requests
    and ``backend`` takes ``percent``, until `crossover switch --promote` or `--abort`."""

    from_: Backend = Field(alias="from")
    percent: Annotated[int, Field(ge=1, le=99)]


class ModelConfig(_Strict):
    name: str
    backend: Backend
    service: Service = "realtime"
    model: ModelSpec
    inputs: Inputs = Field(default_factory=Inputs)
    traffic: Traffic = Field(default_factory=Traffic)
    scaling: Scaling = Field(default_factory=Scaling)
    endpoint: Endpoint = Field(default_factory=Endpoint)
    pipeline: PipelineSpec = Field(default_factory=PipelineSpec)
    alarms: AlarmsSpec = Field(default_factory=AlarmsSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    canary: Canary | None = None
    lambda_: LambdaSpec = Field(default_factory=LambdaSpec, alias="lambda")
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    eia: EiaSpec = Field(default_factory=EiaSpec)
    inferentia: InferentiaSpec = Field(default_factory=InferentiaSpec)
    cpu: CpuSpec = Field(default_factory=CpuSpec)
    lambda_managed: LambdaManagedSpec = Field(default_factory=LambdaManagedSpec, alias="lambda-managed")

    @field_validator("name")
    @classmethod
    def _forms_a_stack_name(cls, name: str) -> str:
        if not _NAME.match(name) or len(STACK_PREFIX + name) > 128:
            raise ValueError(
                "expected a letter, then letters, digits and hyphens (it forms the stack name "
                f"{STACK_PREFIX}<name>, at most 128 characters); got {name!r}"
            )
        return name

    @property
    def fleet(self) -> FleetSpec | None:
        """The selected instance backend's section; None for a function (lambda, lambda-managed)."""
        return getattr(self, self.backend) if KINDS[self.backend].fleet else None

    def section(self, backend: str) -> Any:
        """``backend``'s own section of the config (its YAML key is the backend's name)."""
        return getattr(self, field_of(backend))

    @model_validator(mode="after")
    def _grace_covers_model_load(self) -> ModelConfig:
        for name in _FLEET_KINDS:
            fleet: FleetSpec = getattr(self, name)
            if self.model.load_s is not None and fleet.health_grace_s < self.model.load_s:
                raise ValueError(f"{name}.health_grace_s: expected at least the measured model load "
                                 f"(model.load_s = {self.model.load_s:g} s), or instances are replaced before "
                                 f"they can become healthy; got {fleet.health_grace_s}")
        return self

    @model_validator(mode="after")
    def _pipeline_is_consistent(self) -> ModelConfig:
        pipe = self.pipeline
        minimum = 6 * self.lambda_.timeout_s
        if pipe.visibility_timeout_s is not None and pipe.visibility_timeout_s < minimum:
            raise ValueError(f"pipeline.visibility_timeout_s: expected at least 6 x lambda.timeout_s = {minimum} "
                             "(a message must stay hidden while a batch and its retries run); "
                             f"got {pipe.visibility_timeout_s}")
        if pipe.batch_size > 10 and pipe.max_batching_window_s < 1:
            raise ValueError("pipeline.max_batching_window_s: expected at least 1 when batch_size is over 10 "
                             f"(an SQS event source rule); got {pipe.max_batching_window_s}")
        if self.service == "pipeline" and self.endpoint.certificate_arn is not None:
            raise ValueError("endpoint.certificate_arn: a pipeline has no HTTP endpoint to make public; "
                             "remove it or use service: realtime")
        if self.service == "pipeline" and not (self.inputs.s3 or self.inputs.https):
            raise ValueError("inputs: a pipeline's messages name their images; declare where they may be: "
                             "inputs.s3 (buckets or bucket/prefix/) or inputs.https: true")
        if self.traffic.from_url and not self.inputs.https:
            raise ValueError("traffic.from_url: images arrive by URL only where inputs.https is true")
        if self.traffic.from_url and not self.network.nat_gateways:
            raise ValueError("traffic.from_url: a network without NAT gateways has no way to fetch URLs "
                             "(network.nat_gateways: 0); set traffic.from_url to 0 or give the network a NAT gateway")
        if self.traffic.from_s3 and not self.inputs.s3:
            raise ValueError("traffic.from_s3: images come from S3 only from the locations inputs.s3 declares")
        return self

    @model_validator(mode="after")
    def _realtime_keeps_capacity(self) -> ModelConfig:
        if self.service == "realtime" and self.scaling.min < 1:
            raise ValueError("scaling.min: expected >= 1 for a realtime service (0 would leave the "
                             f"endpoint with no capacity); got {self.scaling.min}")
        if self.service == "realtime" and any(KINDS[b].fleet for b in self.backends) \
                and self.scaling.max <= self.scaling.min:
            raise ValueError(f"scaling.max: expected more than scaling.min ({self.scaling.min}) on an instance "
                             "backend: a rolling update keeps scaling.min instances in service and needs room for "
                             f"one more while it replaces them; got {self.scaling.max}")
        return self

    @model_validator(mode="after")
    def _canary_is_a_move(self) -> ModelConfig:
        if self.canary is None:
            return self
        if self.canary.from_ == self.backend:
            raise ValueError(f"canary.from: expected the backend the model moves from, not the one it moves to "
                             f"(backend: {self.backend}); got {self.canary.from_!r}")
        if self.service == "pipeline":
            raise ValueError("canary: a pipeline has no weighted route to split: during a switch both consumers "
                             "drain the same queue, and each message is still processed once (see docs/switching.md); "
                             "remove canary")
        return self

    @property
    def backends(self) -> list[Backend]:
        """What serves now: the selected backend and, during a canary, the one it moves from."""
        return [self.backend] + ([self.canary.from_] if self.canary else [])

    @property
    def stack_name(self) -> str:
        return STACK_PREFIX + self.name

    @model_validator(mode="after")
    def _mxnet_has_its_files(self) -> ModelConfig:
        if self.model.format == "mxnet" and self.model.mxnet is None:
            raise ValueError("model.mxnet: expected {symbol: ..., params: ...} for format mxnet; it is missing")
        if self.model.format == "mxnet" and is_s3_uri(self.model.artifact):
            raise ValueError("model.artifact: expected a local path for the ONNX that crossover convert writes; "
                             f"got {self.model.artifact!r}")
        return self

    def warnings(self) -> list[str]:
        """What validate, and synth as warnings, say about a config that is valid but questionable."""
        warnings = []
        if self.backend == "eia":
            warnings.append(
                "backend 'eia': AWS Elastic Inference closed to new customers on 2023-04-15 and is no longer "
                "available; current CloudFormation schemas reject the accelerator. Kept for fidelity; "
                "its successor is backend 'inferentia'."
            )
        if self.backend == "inferentia" and not self.runs_neuron:
            warnings.append("backend 'inferentia' without inferentia.neuron_artifact: the ONNX model runs on the "
                            "instance's CPUs, not its NeuronCores (see docs/backends.md: compiling a model for "
                            "Inferentia)")
        fleet = self.fleet
        if fleet is not None and fleet.spot is not None and fleet.spot.on_demand_base < self.scaling.min:
            spot = fleet.spot
            warnings.append(f"{self.backend}.spot.on_demand_base {spot.on_demand_base} is below scaling.min "
                            f"{self.scaling.min}: spot makes the instances above the base cheaper, but AWS can "
                            "take them back with two minutes' notice, and then the fleet runs below its minimum "
                            f"until a replacement has booted and loaded the model (up to {self.backend}."
                            f"health_grace_s, {fleet.health_grace_s} s). Set on_demand_base: {self.scaling.min} to "
                            "keep the minimum on demand")
        if self.backend == "lambda" and self.lambda_.reserved_concurrency is None:
            warnings.append("lambda.reserved_concurrency is unset: one model can use the region's whole "
                            "Lambda concurrency and throttle every other function")
        return warnings

    @property
    def runs_neuron(self) -> bool:
        """Whether the selected backend runs a Neuron-compiled model rather than the ONNX one."""
        return self.backend == "inferentia" and self.inferentia.neuron_artifact is not None

    def serving_spec(self, artifact: str, backend: str | None = None, path_prefix: str = "") -> dict[str, Any]:
        """What the serving side reads (crossover_serving.spec.Spec) on ``backend`` (default: the selected one):
        the model section, the artifact's location, the batch, and the path prefix it is served under."""
        backend = backend or self.backend
        section = self.section(backend)
        model = self.model.model_dump(include={"sha256", "input", "labels", "top_k"})
        neuron = backend == "inferentia" and self.inferentia.neuron_artifact is not None
        return {"name": self.name, "backend": backend, **model, "artifact": artifact,
                "format": "neuron" if neuron else self.model.format,
                "max_batch": getattr(section, "max_batch", 1), "inputs": self.inputs.model_dump(),
                **({"path_prefix": path_prefix} if path_prefix else {})}


def field_of(backend: str) -> str:
    """The ModelConfig field of ``backend``'s section: its name, where that is a Python name."""
    return {"lambda": "lambda_", "lambda-managed": "lambda_managed"}.get(backend, backend)


def is_s3_uri(value: str) -> bool:
    return value.startswith("s3://")
