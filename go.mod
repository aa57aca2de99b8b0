module github.com/clearml-go/clearml-agent

go 1.26
