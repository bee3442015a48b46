from agent.plot.curves import main

main()
