"""`crossover prices refresh`: current EC2 prices, on-demand from the AWS Price List API and spot from EC2's
spot price history, for one region.

Refreshes every instance type of the bundled catalog (Linux, shared tenancy) in ``region`` and writes a new
dated catalog for it; prices the APIs do not cover (Lambda, load balancer, endpoints, the retired EI) are
carried over from the bundled us-east-1 catalog with their original sources. The bundled catalog is never
modified. A spot price is what the Auto Scaling group pays across the zones it spans: the mean of the
cheapest ``AZS`` zones' prices (the group keeps its instances balanced across them).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from crossover.cost import catalog as catalogs
from crossover.cost.catalog import BUNDLED
from crossover.errors import UserError
from crossover.shape import AZS

SOURCE = "pricelist"
SPOT_SOURCE = "spot-history"
SPOT_PRODUCT = "Linux/UNIX"  # the spot price history's name for Linux on shared tenancy (VPC)


class RefreshError(UserError):
    pass


def _filters(instance_type: str, region: str) -> list[dict[str, str]]:
    fields = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux",
              "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def on_demand_hourly(client: Any, instance_type: str, region: str = "us-east-1") -> float | None:
    """The Linux on-demand price; None where the type is not sold in ``region``."""
    response = client.get_products(ServiceCode="AmazonEC2", Filters=_filters(instance_type, region), MaxResults=10)
    for raw in response["PriceList"]:
        product = json.loads(raw)
        for term in product["terms"].get("OnDemand", {}).values():
            for dimension in term["priceDimensions"].values():
                if dimension.get("unit") == "Hrs":
                    return float(dimension["pricePerUnit"]["USD"])
    return None


def spot_hourly(client: Any, instance_type: str, now: datetime.datetime) -> float | None:
    """The current Linux spot price the group pays: the mean of the ``AZS`` cheapest zones' (asked for the
    history from ``now``, EC2 answers each zone's price in effect then); None where no zone sells it."""
    pages = client.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=[instance_type], ProductDescriptions=[SPOT_PRODUCT], StartTime=now, EndTime=now)
    latest: dict[str, tuple[datetime.datetime, float]] = {}  # each zone's most recent price
    for page in pages:
        for entry in page["SpotPriceHistory"]:
            zone, seen = entry["AvailabilityZone"], (entry["Timestamp"], float(entry["SpotPrice"]))
            latest[zone] = max(latest.get(zone, seen), seen)
    cheapest = sorted(price for _, price in latest.values())[:AZS]
    return sum(cheapest) / len(cheapest) if cheapest else None


def refresh(client: Any, out: Path, today: datetime.date | None = None, *, ec2: Any,
            region: str = "us-east-1") -> Path:
    """A new catalog for ``region`` at ``out``: on-demand prices from ``client`` (the Price List API), spot from
    ``ec2`` (a client in ``region``), for every instance type the bundled catalog prices."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    today = today or datetime.date.today()
    yaml = YAML(typ="rt")
    catalog = yaml.load(BUNDLED.read_text())
    bundled = catalogs.load()
    try:
        prices = {t: on_demand_hourly(client, t, region) for t in bundled.ec2}
        now = datetime.datetime.now(datetime.UTC)
        spot = {t: spot_hourly(ec2, t, now) for t in bundled.spot}
    except NoCredentialsError:
        raise RefreshError("no AWS credentials: the Price List API and the spot price history need them (any "
                           f"account can read them); the bundled catalog {BUNDLED.name} is unchanged") from None
    except (ClientError, BotoCoreError) as e:
        raise RefreshError(f"reading prices failed: {e}") from None
    month = today.strftime("%Y-%m")
    catalog["region"], catalog["date"] = region, today
    catalog["sources"][SOURCE] = f"AWS Price List API (pricing.get_products, {region}), {today.isoformat()}"
    catalog["sources"][SPOT_SOURCE] = (f"EC2 spot price history (ec2.describe_spot_price_history, {SPOT_PRODUCT}, "
                                       f"{region}: the mean of the {AZS} cheapest Availability Zones), "
                                       f"{today.isoformat()}")
    for section, source, fresh in (("ec2", SOURCE, prices), ("spot", SPOT_SOURCE, spot)):
        catalog[section] = {t: {"usd": usd, "source": source, "date": month} for t, usd in fresh.items()
                            if usd is not None}
    with out.open("w") as handle:
        yaml.dump(catalog, handle)
    return out
