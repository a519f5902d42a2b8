from sdoverlay.entry import main

main()
