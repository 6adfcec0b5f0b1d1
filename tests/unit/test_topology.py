"""Lab topology files: validation errors are precise, reachability follows networks."""

from pathlib import Path

import pytest

from lab.topology import TopologyError, load_topology

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_shipped_lab_topology_is_valid_and_isolates_tenants() -> None:
    topo = load_topology(REPO / "topologies" / "lab.yaml")
    reach = topo.expected_reachability()
    assert reach[("r1", "r2")] is True  # same VLAN network across hosts
    assert reach[("r3", "r4")] is True  # same VXLAN network across hosts
    assert reach[("r1", "b1")] is False  # other tenant, same addresses
    assert reach[("r1", "r3")] is False  # same tenant, other network
    assert len(reach) == 8 * 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "hosts: [{name: h1}]\ntenants: [{name: t, networks: [{name: n, type: vlan, "
            "cidr: 10.0.0.0/24, vms: [{name: a, host: h9, ip: 10.0.0.2}]}]}]",
            "unknown host 'h9'",
        ),
        (
            "hosts: [{name: h1}]\ntenants: [{name: t, networks: [{name: n, type: vlan, "
            "cidr: 10.0.0.0/24, vms: [{name: a, host: h1, ip: 10.9.0.2}]}]}]",
            "outside 10.0.0.0/24",
        ),
        (
            "hosts: [{name: h1}]\ntenants: [{name: t, networks: [{name: n, type: gre, "
            "cidr: 10.0.0.0/24}]}]",
            "tenants.0.networks.0.type",
        ),
        ("hosts: [{name: h1, colour: red}]\ntenants: []", "hosts.0.colour"),
        ("hosts: [{name: h1}, {name: h1}]\ntenants: []", "unique"),
        ("hosts: [\n", "not valid YAML"),
    ],
)
def test_bad_topologies_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert message in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read topology"):
        load_topology(tmp_path / "nope.yaml")
