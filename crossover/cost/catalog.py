"""The price catalog: a dated YAML file in which every price names its source."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from crossover.config import ConfigError, Problem, describe, yaml_mapping

BUNDLED = Path(__file__).with_name("prices.yaml")
# The bundled catalog's EC2 tables: hundreds of prices, read as JSON (scripts/ec2_prices.py writes them), each table
# with one source and date.
EC2_TABLES = Path(__file__).with_name("ec2.json")


_SIZE = r"[0-9]*(nano|micro|small|medium|large|xlarge|metal)(-[0-9]+xl)?"
InstanceType = Annotated[str, StringConstraints(pattern=rf"^[a-z][a-z0-9-]*\.{_SIZE}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Price(_Strict):
    usd: Annotated[float, Field(ge=0)]
    source: str
    date: datetime.date | str


class LambdaPrices(_Strict):
    gb_second_usd: Price
    arm_gb_second_usd: Price
    per_million_requests_usd: Price
    provisioned_gb_second_usd: Price  # provisioned concurrency, per GB-second configured
    provisioned_execution_gb_second_usd: Price  # duration of invocations on provisioned environments (x86)


class Share(_Strict):
    share: Annotated[float, Field(ge=0, le=1)]
    source: str
    date: datetime.date | str


class LambdaManagedPrices(_Strict):
    """Lambda Managed Instances: the instances at EC2's price, a management fee on top, and requests."""

    management_fee: Share  # of the instances' on-demand price (Savings Plans discount the EC2 part only)
    per_million_requests_usd: Price


class AlbPrices(_Strict):
    hourly_usd: Price
    lcu_hourly_usd: Price


class EndpointPrices(_Strict):
    hourly_usd_per_az: Price


class NatPrices(_Strict):
    hourly_usd: Price
    per_gb_usd: Price  # data processed


class S3Prices(_Strict):
    put_per_thousand_usd: Price
    get_per_thousand_usd: Price
    gb_month_usd: Price  # S3 Standard storage


class KmsPrices(_Strict):
    per_10k_requests_usd: Price


class WafPrices(_Strict):
    web_acl_month_usd: Price
    rule_month_usd: Price
    per_million_requests_usd: Price


class Ipv4Prices(_Strict):
    hourly_usd: Price  # each public IPv4 address, in use or not


class XrayPrices(_Strict):
    per_million_traces_usd: Price  # recorded


class CloudWatchPrices(_Strict):
    logs_ingested_gb_usd: Price
    logs_stored_gb_month_usd: Price
    alarm_metric_month_usd: Price  # standard resolution, per metric an alarm evaluates
    dashboard_month_usd: Price
    metric_month_usd: Price  # a custom metric (name and dimensions)
    per_thousand_api_requests_usd: Price  # PutMetricData and other API calls


class EbsPrices(_Strict):
    gp3_gb_month_usd: Price


class SqsPrices(_Strict):
    per_million_requests_usd: Price


class Catalog(_Strict):
    region: str
    currency: str = "USD"
    date: datetime.date
    hours_per_month: Annotated[float, Field(gt=0)]
    sources: dict[str, str]
    lambda_: LambdaPrices = Field(alias="lambda")
    lambda_managed: LambdaManagedPrices = Field(alias="lambda-managed")
    ec2: dict[InstanceType, Price]
    # Spot: the Linux price per instance-hour in the region's cheapest Availability Zone; it moves with supply
    # and demand, so every entry is dated. Types without one get no spot row.
    spot: dict[InstanceType, Price] = Field(default_factory=dict)
    eia: dict[Annotated[str, StringConstraints(pattern=r"^eia[12]\.(medium|large|xlarge)$")], Price]
    alb: AlbPrices
    vpc_endpoint: EndpointPrices
    nat: NatPrices
    ebs: EbsPrices
    sqs: SqsPrices
    s3: S3Prices
    kms: KmsPrices
    waf: WafPrices
    ipv4: Ipv4Prices
    xray: XrayPrices
    cloudwatch: CloudWatchPrices

    def prices(self) -> list[Price]:
        sections = (self.lambda_, self.lambda_managed, self.alb, self.vpc_endpoint, self.nat, self.ebs, self.sqs,
                    self.s3, self.kms, self.waf, self.ipv4, self.xray, self.cloudwatch)
        return [*self.ec2.values(), *self.spot.values(), *self.eia.values(),
                *(price for section in sections for name in type(section).model_fields
                  if isinstance(price := getattr(section, name), Price))]

    @model_validator(mode="after")
    def _sources_are_declared(self) -> Catalog:
        used = [p.source for p in self.prices()] + [self.lambda_managed.management_fee.source]
        unknown = sorted(set(used) - set(self.sources))
        if unknown:
            raise ValueError(f"sources: expected every price's source to be listed here; missing {unknown}")
        return self


class MissingPrice(Exception):
    """The catalog has no price for a type the config uses."""

    def __init__(self, key: str, catalog: str) -> None:
        super().__init__(f"{catalog}: no price for {key}; add it (with its source and date) or pick a priced type")
        self.key = key


def load(path: Path = BUNDLED) -> Catalog:
    data = yaml_mapping(path, str(path))
    if "ec2" not in data and "spot" not in data:  # the bundled catalog (or a copy of it): its EC2 tables beside it
        data = {**data, **ec2_tables(str(data.get("region")))}
    try:
        return Catalog.model_validate(data)
    except ValidationError as e:
        raise ConfigError([Problem(str(path), ".".join(str(p) for p in err["loc"]), describe(err, Catalog))
                           for err in e.errors()]) from None


def ec2_tables(region: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``ec2`` and ``spot`` for ``region`` from EC2_TABLES, each price with its table's source and date (a spot
    price from the feed where one was transcribed, else from the advisor's savings)."""
    tables = json.loads(EC2_TABLES.read_text()).get(region, {})

    def prices(*names: str) -> dict[str, dict[str, Any]]:
        return {instance_type: {"usd": usd, "source": tables[name]["source"], "date": tables[name]["date"]}
                for name in names if name in tables for instance_type, usd in tables[name]["usd"].items()}

    return {"ec2": prices("on_demand"), "spot": prices("spot", "spot_feed")}


def hourly(catalog: Catalog, section: str, key: str, shown: str = "prices") -> float:
    """An instance or accelerator's hourly price; MissingPrice naming the key when absent."""
    prices: dict[str, Price] = getattr(catalog, section)
    if key not in prices:
        raise MissingPrice(f"{section}.{key}", shown)
    return prices[key].usd
