from shiplog.cli import main

main()
