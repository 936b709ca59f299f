from ocrstream.cli import main

main()
