"""Writes crossover/cost/ec2.json, the bundled EC2 price tables, from two dated public sources.

    python scripts/ec2_prices.py ZZ_GENERATED_PRICING_AWS_GO SPOT_ADVISOR_DATA_JSON

- On demand: Karpenter's generated price table (pkg/providers/pricing/zz_generated.pricing_aws.go in
  github.com/aws/karpenter-provider-aws; the file says when it was generated and for which region: us-east-1).
- Spot: the EC2 Spot Instance Advisor's savings over on demand for each type and region (spot-advisor-data.json,
  as embedded in github.com/alexei-led/spotinfo), applied to that on-demand price; where the spot price feed was
  transcribed (the file's ``spot_feed`` table, kept as it is), that price instead.

Only the families crossover's backends accept are kept, every size whose vCPUs crossover can count. No dated
public copy of other regions' on-demand prices exists offline: `crossover prices refresh --region R` writes a
catalog for R from the AWS Price List API.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossover.config import vcpus
from crossover.config.schema import _FLEET_KINDS

OUT = Path(__file__).resolve().parent.parent / "crossover" / "cost" / "ec2.json"
ADVISOR_DATE = "2025-06"  # spotinfo's commit of the advisor data: 2025-06-28


def main(karpenter: Path, advisor: Path) -> None:
    text = karpenter.read_text()
    generated = re.search(r"// generated at (\d{4}-\d{2}-\d{2})T\S+ for (\S+)", text)
    if generated is None:
        sys.exit(f"{karpenter}: no 'generated at ... for <region>' line")
    date, region = generated.groups()
    families = {f for _, accepted in _FLEET_KINDS.values() for f in accepted}
    on_demand = {}
    for name, price in re.findall(r'"([a-z0-9-]+\.[a-z0-9-]+)": ([0-9.]+)', text):
        if name.split(".")[0] not in families:
            continue
        try:
            vcpus(name)
        except ValueError:
            continue  # a bare metal size: crossover cannot count its vCPUs
        on_demand[name] = float(price)
    savings = json.loads(advisor.read_text())["spot_advisor"][region]["Linux"]
    spot = {name: round(usd * (1 - savings[name]["s"] / 100), 6) for name, usd in on_demand.items() if name in savings}
    feed = json.loads(OUT.read_text()).get(region, {}).get("spot_feed") if OUT.is_file() else None
    tables = {region: {
        "on_demand": {"source": "karpenter", "date": date, "usd": dict(sorted(on_demand.items()))},
        "spot": {"source": "spot-advisor", "date": ADVISOR_DATE, "usd": dict(sorted(spot.items()))},
        **({"spot_feed": feed} if feed else {})}}
    OUT.write_text(json.dumps(tables, indent=1) + "\n")
    print(f"{OUT}: {region}, {len(on_demand)} on-demand prices ({date}), {len(spot)} spot")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
