from certman.cli import main

main()
