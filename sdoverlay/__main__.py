from sdoverlay.cli import main

main()
