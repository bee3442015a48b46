from agent.sweep.sweep import main

main()
