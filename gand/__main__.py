from gand.cli.main import main

main()
