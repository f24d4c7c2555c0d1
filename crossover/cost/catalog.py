"""The price catalog: a dated YAML file in which every price names its source."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from crossover.config import ConfigError, Problem, describe, yaml_mapping

BUNDLED = Path(__file__).with_name("prices.yaml")


_SIZE = r"[0-9]*(nano|micro|small|medium|large|xlarge|metal)"
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


class AlbPrices(_Strict):
    hourly_usd: Price
    lcu_hourly_usd: Price


class EndpointPrices(_Strict):
    hourly_usd_per_az: Price


class NatPrices(_Strict):
    hourly_usd: Price


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

    def prices(self) -> list[Price]:
        return [*self.ec2.values(), *self.spot.values(), *self.eia.values(), self.lambda_.gb_second_usd,
                self.lambda_.arm_gb_second_usd, self.lambda_.per_million_requests_usd,
                self.lambda_.provisioned_gb_second_usd, self.lambda_.provisioned_execution_gb_second_usd,
                self.alb.hourly_usd, self.alb.lcu_hourly_usd,
                self.vpc_endpoint.hourly_usd_per_az, self.nat.hourly_usd, self.ebs.gp3_gb_month_usd,
                self.sqs.per_million_requests_usd]

    @model_validator(mode="after")
    def _sources_are_declared(self) -> Catalog:
        used = [p.source for p in self.prices()]
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
    try:
        return Catalog.model_validate(data)
    except ValidationError as e:
        raise ConfigError([Problem(str(path), ".".join(str(p) for p in err["loc"]), describe(err, Catalog))
                           for err in e.errors()]) from None


def hourly(catalog: Catalog, section: str, key: str, shown: str = "prices") -> float:
    """An instance or accelerator's hourly price; MissingPrice naming the key when absent."""
    prices: dict[str, Price] = getattr(catalog, section)
    if key not in prices:
        raise MissingPrice(f"{section}.{key}", shown)
    return prices[key].usd
