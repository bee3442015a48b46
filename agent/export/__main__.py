from agent.export.convert import main

main()
