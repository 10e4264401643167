"""Pure functions of benchmarks/run.py: dnsperf output parsing, latency percentiles, mixes.

No server and no dnsperf is started here (tests/test_refservers.py starts Knot and NSD).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import run  # noqa: E402

STATS = """\
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         6
  Queries completed:    4 (66.67%)
  Queries lost:         2 (33.33%)

  Response codes:       NOERROR 3 (75.00%), NXDOMAIN 1 (25.00%)
  Average packet size:  request 24, response 24
  Run time (s):         1.000308
  Queries per second:   3.998768

  Average Latency (s):  0.000158 (min 0.000155, max 0.000160)
  Latency StdDev (s):   0.000003
"""

VERBOSE = [
    "DNS Performance Testing Tool\n",
    "Version 2.10.0\n",
    "[Status] Sending queries (to 127.0.0.1:35138)\n",
    "> NOERROR b.coop AAAA 0.000155\n",
    "> NOERROR a.coop A 0.000670\n",
    "> T a.coop A\n",
    "> NXDOMAIN x1.coop A 1.250000\n",
    "> T c.coop NS\n",
    "> NOERROR c.coop NS 0.000160\n",
    *(line + "\n" for line in STATS.splitlines()),
]


def test_latency_us_is_exact() -> None:
    assert run.latency_us("0.000670") == 670
    assert run.latency_us("1.250000") == 1_250_000
    assert run.latency_us("12.000001") == 12_000_001
    assert run.latency_us("3") == 3_000_000
    for bad in ("", "x", "-0.1", "0.00a"):
        with pytest.raises(ValueError):
            run.latency_us(bad)


def test_latency_stream_counts_timeouts_as_lost_not_latencies() -> None:
    stream = run.LatencyStream()
    for line in VERBOSE:
        stream.feed(line)
    assert stream.timeouts == 2
    assert stream.answered == 4
    assert stream.histogram == Counter({155: 1, 670: 1, 1_250_000: 1, 160: 1})
    assert "Queries sent:         6" in stream.text()
    assert "> " not in stream.text()

    res = run.latency_result(stream, rate=20000)
    assert (res.sent, res.completed, res.lost) == (6, 4, 2)
    assert res.timeout_lines == 2 and res.answered_lines == 4
    assert res.p50_ms == pytest.approx(0.160)  # 2nd of 155, 160, 670, 1250000 µs
    assert res.p99_ms == pytest.approx(1250.0)
    assert res.max_ms == pytest.approx(1250.0)
    assert res.mean_ms == pytest.approx((155 + 160 + 670 + 1_250_000) / 4 / 1000)


def test_latency_stream_interrupted_and_warnings() -> None:
    stream = run.LatencyStream()
    stream.feed("> I q.coop A\n")
    stream.feed("Warning: socket 0x55 not ready\n")
    stream.feed("> NOERROR q.coop A not-a-number\n")  # kept as text, not a latency
    assert stream.interrupted == 1 and stream.answered == 0
    assert stream.text().splitlines() == [
        "Warning: socket 0x55 not ready",
        "> NOERROR q.coop A not-a-number",
    ]


def test_latency_stream_keeps_a_bounded_tail_of_other_lines() -> None:
    stream = run.LatencyStream()
    for i in range(1000):
        stream.feed(f"Warning: {i}\n")
    for line in STATS.splitlines():
        stream.feed(line + "\n")
    assert len(stream.other) == stream.other.maxlen
    assert stream.other_dropped == 1000 + len(STATS.splitlines()) - stream.other.maxlen
    assert run.parse_dnsperf(stream.text()).sent == 6  # the statistics survive


def test_latency_result_needs_the_statistics() -> None:
    stream = run.LatencyStream()
    stream.feed("> NOERROR a.coop A 0.000100\n")
    with pytest.raises(ValueError):
        run.latency_result(stream, rate=10)


def test_percentile_nearest_rank() -> None:
    assert run.percentile_us({}, 50) is None
    assert run.percentile_us({7: 1}, 99) == 7
    hist = Counter(range(1, 101))  # 1..100 once each
    assert run.percentile_us(hist, 50) == 50
    assert run.percentile_us(hist, 99) == 99
    assert run.percentile_us(hist, 100) == 100
    assert run.percentile_us(hist, 0) == 1
    skewed = {10: 98, 20: 1, 5000: 1}
    assert run.percentile_us(skewed, 50) == 10
    assert run.percentile_us(skewed, 99) == 20
    assert run.percentile_us(skewed, 99.5) == 5000


def _args(*argv: str) -> object:
    return run.parse_args(list(argv))


def test_dnsperf_command_throughput_and_latency_runs() -> None:
    args = _args("--clients", "4", "--outstanding", "50", "--timeout", "2")
    mix = run.parse_mix("tld-do")
    cmd = run.dnsperf_command(5353, Path("q.txt"), 3, mix, args)
    assert cmd[:3] == ["dnsperf", "-s", "127.0.0.1"]
    joined = " ".join(cmd)
    assert "-p 5353 -d q.txt -l 3 -c 4 -q 50 -t 2 -O suppress=timeouts -D" in joined
    assert "-v" not in cmd and "-Q" not in cmd

    lat = run.dnsperf_command(5353, Path("q.txt"), 5, mix, args, rate=20000, verbose=True)
    assert "-v" in lat and "suppress=timeouts" not in lat  # "> T" lines must be printed
    assert lat[lat.index("-Q") + 1] == "20000"
    assert lat[lat.index("-l") + 1] == "5"


def test_latency_options() -> None:
    args = _args()
    assert args.latency_rate == 20000 and args.latency_duration == 5
    assert _args("--latency-duration", "0").latency_duration == 0
    with pytest.raises(SystemExit):
        _args("--latency-rate", "0")


def test_mixes_and_their_transport() -> None:
    assert run.parse_mix("tld").flags == ()
    assert run.parse_mix("random-do").flags == ("-D",)
    tcp = run.parse_mix("tld-do-tcp")
    assert tcp.transport == "tcp" and not tcp.one_query_per_conn
    assert tcp.clients is None and tcp.rate is None  # the command line's -c / -q
    assert run.parse_mix("tld-edns").transport == "udp"
    with pytest.raises(Exception, match="bad mix"):
        run.parse_mix("tld-tcp2")
    with pytest.raises(Exception, match="bad mix"):
        run.parse_mix("soa-do")


def test_one_query_per_connection_mix_runs_at_a_fixed_rate() -> None:
    mix = run.parse_mix("tld-do-tcp1")
    assert mix.one_query_per_conn and mix.transport == "tcp"
    assert (mix.clients, mix.outstanding, mix.threads, mix.rate) == (
        run.TCP1_CLIENTS, run.TCP1_CLIENTS, run.TCP1_THREADS, run.TCP1_RATE,
    )
    args = _args("--mix", "tld-do-tcp1,tld-do-tcp", "--tcp1-clients", "50", "--tcp1-rate", "120")
    tcp1, tcp = args.mix
    assert (tcp1.clients, tcp1.outstanding, tcp1.threads, tcp1.rate) == (50, 50, 4, 120)
    assert tcp.clients is None

    cmd = run.dnsperf_command(53, Path("q"), 20, tcp1, args)
    joined = " ".join(cmd)
    assert "-c 50 -T 4 -q 50" in joined and "-Q 120" in joined
    assert "-m tcp -O num-queries-per-conn=1" in joined and "-D" in cmd
    # the latency run never exceeds the mix's rate
    assert run.latency_rate(tcp1, args) == 120
    assert run.latency_rate(tcp, args) == 20000
    lat = run.dnsperf_command(53, Path("q"), 5, tcp1, args, rate=120, verbose=True)
    assert lat[lat.index("-Q") + 1] == "120"

    plain = run.dnsperf_command(53, Path("q"), 20, tcp, args)
    assert "-T" not in plain and "-Q" not in plain and "num-queries-per-conn=1" not in plain
    assert _args("--mix", "tld-tcp1", "--tcp1-rate", "0").mix[0].rate is None


# --------------------------------------------------------------------------------------------
# Correctness sample
# --------------------------------------------------------------------------------------------


def test_sample_questions_are_spread_and_deterministic(tmp_path: Path) -> None:
    qfile = tmp_path / "q.txt"
    qfile.write_text("".join(f"n{i}.coop A\n" for i in range(1000)))
    picked = run.sample_questions(qfile, 4)
    assert picked == [("n0.coop", "A"), ("n250.coop", "A"), ("n500.coop", "A"),
                      ("n750.coop", "A")]
    assert run.sample_questions(qfile, 4) == picked
    assert len(run.sample_questions(qfile, 5000)) == 1000  # never more than the file
    assert run.sample_questions(qfile, 0) == []
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert run.sample_questions(empty, 10) == []


def test_sample_query_is_what_dnsperf_sends() -> None:
    import dns.flags

    plain = run.sample_query("a.coop", "A", run.parse_mix("tld"))
    assert plain.edns < 0 and plain.flags & dns.flags.RD
    edns = run.sample_query("a.coop", "A", run.parse_mix("tld-edns"))
    assert edns.edns == 0 and edns.payload == 4096 and not edns.ednsflags & dns.flags.DO
    do = run.sample_query("a.coop", "DS", run.parse_mix("random-do-tcp1"))
    assert do.edns == 0 and do.payload == 4096 and do.ednsflags & dns.flags.DO
    assert str(do.question[0].name) == "a.coop."


def test_response_shape_counts_records_like_the_header() -> None:
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rrset

    query = run.sample_query("x.example.coop", "A", run.parse_mix("tld-do"))
    resp = dns.message.make_response(query)
    resp.set_rcode(dns.rcode.NOERROR)
    resp.authority.append(
        dns.rrset.from_text("example.coop.", 3600, "IN", "NS", "ns1.example.coop.",
                            "ns2.example.coop.")
    )
    resp.additional.append(
        dns.rrset.from_text("ns1.example.coop.", 3600, "IN", "A", "192.0.2.1")
    )
    shape = run.response_shape(dns.message.from_wire(resp.to_wire()))
    assert shape == run.Shape("NOERROR", aa=False, tc=False, counts=(0, 2, 2))  # + OPT
    assert shape.text() == "NOERROR 0/2/2"
    resp.flags |= dns.flags.AA | dns.flags.TC
    resp.set_rcode(dns.rcode.NXDOMAIN)
    assert run.response_shape(resp).text() == "NXDOMAIN aa tc 0/2/2"


def _shape(rcode: str = "NOERROR", counts: tuple[int, int, int] = (1, 0, 1)) -> object:
    return run.Shape(rcode, aa=True, tc=False, counts=counts)


def test_compare_sample_counts_mismatches_and_silences() -> None:
    questions = [(f"q{i}.coop", "A") for i in range(6)]
    mix = run.parse_mix("tld-do")

    def ref(query: object) -> object:
        name = str(query.question[0].name)
        return "no answer" if name == "q5.coop." else _shape()

    def good(query: object) -> object:
        return _shape()

    def wrong(query: object) -> object:
        name = str(query.question[0].name)
        if name in ("q1.coop.", "q3.coop."):
            return _shape("NXDOMAIN", (0, 4, 1))
        return "no answer within 2 s" if name == "q2.coop." else _shape()

    checks, ref_silent = run.compare_sample(questions, mix, ref, {"ours": good, "bad": wrong})
    assert ref_silent == 1
    ours, bad = checks
    assert (ours.server, ours.mix, ours.sampled, ours.compared, ours.mismatches) == (
        "ours", "tld-do", 6, 5, 0
    )
    assert ours.cell() == "0/5"
    assert (bad.compared, bad.mismatches, bad.no_answer) == (5, 3, 1)
    assert bad.examples == [
        "q1.coop A: bad NXDOMAIN aa 0/4/1, knot NOERROR aa 1/0/1",
        "q2.coop A: bad no answer within 2 s, knot NOERROR aa 1/0/1",
        "q3.coop A: bad NXDOMAIN aa 0/4/1, knot NOERROR aa 1/0/1",
    ]


def test_compare_sample_gives_up_on_a_silent_or_dead_server() -> None:
    questions = [(f"q{i}.coop", "A") for i in range(20)]
    mix = run.parse_mix("tld")
    checks, _ = run.compare_sample(
        questions, mix, lambda q: _shape(), {"mute": lambda q: "no answer"}
    )
    (mute,) = checks
    assert mute.compared == run.SAMPLE_GIVE_UP and mute.mismatches == run.SAMPLE_GIVE_UP
    assert mute.skipped and mute.cell().endswith("!")
    assert len(mute.examples) == min(run.SAMPLE_EXAMPLES, run.SAMPLE_GIVE_UP)

    same = [("q.coop", "A")] * 3  # a question met twice is listed once
    checks, _ = run.compare_sample(same, mix, lambda q: _shape(), {"x": lambda q: _shape("X")})
    assert checks[0].mismatches == 3 and len(checks[0].examples) == 1

    checks, _ = run.compare_sample(
        questions, mix, lambda q: _shape(), {"dead": lambda q: _shape()},
        alive=lambda name: False,
    )
    assert checks[0].compared == 0 and checks[0].skipped == "server not running"


def test_correctness_in_the_report() -> None:
    args = _args("--servers", "ours,knot", "--mix", "tld-do")
    sample = run.Sample("ours", "tld-do", 1, ok=True, dnsperf=run.parse_dnsperf(STATS))
    ref_sample = run.Sample("knot", "tld-do", 1, ok=True, dnsperf=run.parse_dnsperf(STATS))
    check = run.SampleCheck("ours", "tld-do", 3, compared=3, mismatches=1,
                            examples=["a.coop A: ours NXDOMAIN 0/4/1, knot NOERROR 0/4/3"])
    result = run.Correctness("knot (under test)", questions={"tld-do": 3}, checks=[check])
    tables, failures = run.render_report(
        args, {}, [sample, ref_sample], interrupted=False, correctness=result
    )
    assert "≠ knot" in tables
    rows = {line.split("|")[1].strip(): line for line in tables.splitlines()
            if "| tld-do " in line and not line.startswith("| tld-do")}
    assert "| 1/3 " in rows["ours"] and "| ref " in rows["knot"]
    assert "ours: 1 of 3 differ" in tables
    assert "`a.coop A: ours NXDOMAIN 0/4/1, knot NOERROR 0/4/3`" in tables
    assert failures == ""

    none = run.Correctness(None, "no comparison made: Knot did not start: boom")
    tables, _ = run.render_report(args, {}, [sample], interrupted=False, correctness=none)
    assert "no comparison made: Knot did not start: boom" in tables


def test_sample_option() -> None:
    assert _args().sample == 500
    assert _args("--sample", "0").sample == 0


class _FakeServer:
    name, port = "fake", 5353

    def alive(self) -> bool:
        return True


def test_latency_run_reads_dnsperf_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """latency_run end to end with a stand-in dnsperf that prints a verbose run."""
    import io
    import os

    (tmp_path / "out.txt").write_text("".join(VERBOSE))
    fake = tmp_path / "dnsperf"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat {tmp_path}/out.txt\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    args = _args("--latency-rate", "1000", "--latency-duration", "2")
    raw = io.StringIO()
    res, err = run.latency_run(_FakeServer(), run.parse_mix("tld-do"), Path("q"), args, raw)
    assert err is None and res is not None
    assert (res.rate, res.sent, res.lost, res.timeout_lines) == (1000, 6, 2, 2)
    assert res.p50_ms == pytest.approx(0.160)
    argv = (tmp_path / "argv").read_text().split()
    assert argv[argv.index("-Q") + 1] == "1000" and "-v" in argv
    assert "### latency run: dnsperf" in raw.getvalue()
    assert "4 answered, 2 timed out" in raw.getvalue()

    (tmp_path / "out.txt").write_text("Error: bind: Address already in use\n")
    res, err = run.latency_run(_FakeServer(), run.parse_mix("tld-do"), Path("q"), args, raw)
    assert res is None and "bind: Address already in use" in (err or "")
