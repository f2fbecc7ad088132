module loopback.test/gopem

go 1.22
