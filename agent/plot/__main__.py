import sys

if sys.argv[1:2] == ["stats"]:  # python -m agent.plot stats SCORES.csv: our runs beside the published scores (agent/plot/benchmark.py)
    from agent.plot.benchmark import main as stats_main

    stats_main(args=sys.argv[2:], prog_name="python -m agent.plot stats")
else:
    from agent.plot.curves import main

    main()
