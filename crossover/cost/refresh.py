"""`crossover prices refresh`: current EC2 prices, on-demand from the AWS Price List API and spot from EC2's
spot price history.

Refreshes every instance type of the bundled catalog (Linux, shared tenancy, us-east-1) and writes
a new dated catalog; prices the APIs do not cover (Lambda, load balancer, endpoints, the retired EI)
are carried over with their original sources. The bundled catalog is never modified.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from crossover.cost.catalog import BUNDLED
from crossover.errors import UserError

LOCATION = "US East (N. Virginia)"
SOURCE = "pricelist"
SPOT_SOURCE = "spot-history"
SPOT_PRODUCT = "Linux/UNIX"  # the spot price history's name for Linux on shared tenancy (VPC)


class RefreshError(UserError):
    pass


def _filters(instance_type: str) -> list[dict[str, str]]:
    fields = {"instanceType": instance_type, "location": LOCATION, "operatingSystem": "Linux",
              "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def on_demand_hourly(client: Any, instance_type: str) -> float:
    response = client.get_products(ServiceCode="AmazonEC2", Filters=_filters(instance_type), MaxResults=10)
    for raw in response["PriceList"]:
        product = json.loads(raw)
        for term in product["terms"].get("OnDemand", {}).values():
            for dimension in term["priceDimensions"].values():
                if dimension.get("unit") == "Hrs":
                    return float(dimension["pricePerUnit"]["USD"])
    raise RefreshError(f"the Price List API has no on-demand Linux price for {instance_type} in {LOCATION}")


def spot_hourly(client: Any, instance_type: str, now: datetime.datetime) -> float:
    """The current Linux spot price in the region's cheapest Availability Zone (what the bundled catalog's spot
    feed gives): asked for the history from ``now``, EC2 answers each zone's price in effect then."""
    pages = client.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=[instance_type], ProductDescriptions=[SPOT_PRODUCT], StartTime=now, EndTime=now)
    latest: dict[str, tuple[datetime.datetime, float]] = {}  # each zone's most recent price
    for page in pages:
        for entry in page["SpotPriceHistory"]:
            zone, seen = entry["AvailabilityZone"], (entry["Timestamp"], float(entry["SpotPrice"]))
            latest[zone] = max(latest.get(zone, seen), seen)
    if not latest:
        raise RefreshError(f"EC2 has no {SPOT_PRODUCT} spot price for {instance_type} in this region")
    return min(price for _, price in latest.values())


def refresh(client: Any, out: Path, today: datetime.date | None = None, *, ec2: Any) -> Path:
    """A new catalog at ``out``: on-demand prices from ``client`` (the Price List API), spot from ``ec2``."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    today = today or datetime.date.today()
    yaml = YAML(typ="rt")
    catalog = yaml.load(BUNDLED.read_text())
    try:
        prices = {t: on_demand_hourly(client, t) for t in catalog["ec2"]}
        now = datetime.datetime.now(datetime.UTC)
        spot = {t: spot_hourly(ec2, t, now) for t in catalog["spot"]}
    except NoCredentialsError:
        raise RefreshError("no AWS credentials: the Price List API and the spot price history need them (any "
                           f"account can read them); the bundled catalog {BUNDLED.name} is unchanged") from None
    except (ClientError, BotoCoreError) as e:
        raise RefreshError(f"reading prices failed: {e}") from None
    month = today.strftime("%Y-%m")
    catalog["date"] = today
    catalog["sources"][SOURCE] = f"AWS Price List API (pricing.get_products, {LOCATION}), {today.isoformat()}"
    catalog["sources"][SPOT_SOURCE] = (f"EC2 spot price history (ec2.describe_spot_price_history, {SPOT_PRODUCT}, "
                                       f"cheapest Availability Zone), {today.isoformat()}")
    for section, source, fresh in (("ec2", SOURCE, prices), ("spot", SPOT_SOURCE, spot)):
        for instance_type, usd in fresh.items():
            catalog[section][instance_type] = {"usd": usd, "source": source, "date": month}
    with out.open("w") as handle:
        yaml.dump(catalog, handle)
    return out
