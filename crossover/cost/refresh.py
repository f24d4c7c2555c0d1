"""`crossover prices refresh`: current on-demand EC2 prices from the AWS Price List API.

Refreshes every instance type of the bundled catalog (Linux, shared tenancy, us-east-1) and writes
a new dated catalog; prices the API does not cover (Lambda, load balancer, endpoints, the retired EI)
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


def refresh(client: Any, out: Path, today: datetime.date | None = None) -> Path:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    today = today or datetime.date.today()
    yaml = YAML(typ="rt")
    catalog = yaml.load(BUNDLED.read_text())
    try:
        prices = {t: on_demand_hourly(client, t) for t in catalog["ec2"]}
    except NoCredentialsError:
        raise RefreshError("no AWS credentials: the Price List API needs them (any account can read it); "
                           f"the bundled catalog {BUNDLED.name} is unchanged") from None
    except (ClientError, BotoCoreError) as e:
        raise RefreshError(f"the Price List API failed: {e}") from None
    month = today.strftime("%Y-%m")
    catalog["date"] = today
    catalog["sources"][SOURCE] = f"AWS Price List API (pricing.get_products, {LOCATION}), {today.isoformat()}"
    for instance_type, usd in prices.items():
        catalog["ec2"][instance_type] = {"usd": usd, "source": SOURCE, "date": month}
    with out.open("w") as handle:
        yaml.dump(catalog, handle)
    return out
