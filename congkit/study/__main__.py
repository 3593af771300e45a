"""`python -m congkit.study`: the study's command line (`congkit.study.driver.main`)."""

from congkit.study.driver import main

if __name__ == "__main__":
    main()
