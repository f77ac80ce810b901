from capsearch.cli import main

main()
