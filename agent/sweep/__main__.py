from agent.sweep.cli import main

main()
