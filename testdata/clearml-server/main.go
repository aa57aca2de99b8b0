// Command clearml-server runs the in-memory fake clearml-server:
//
//	go run ./testdata/clearml-server -addr 127.0.0.1:8008 [-files-addr 127.0.0.1:8081] [-v]
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8008", "listen address")
	seedDemo := flag.Bool("seed-demo", false, "add a demo task to the default queue")
	demoRepo := flag.String("demo-repo", "", "repository of the demo task (a local git repo works offline)")
	demoEntry := flag.String("demo-entry", "train.py", "entry point of the demo task")
	verbose := flag.Bool("v", false, "log every request to stderr")
	filesAddr := flag.String("files-addr", "", "also run a files server (artifact uploads) on this address, e.g. 127.0.0.1:8081")
	flag.Parse()

	s := fakeserver.New()
	if *verbose {
		s.LogRequests(os.Stderr)
	}
	if *seedDemo || *demoRepo != "" {
		repo := *demoRepo
		if repo == "" {
			repo = "https://github.com/allegroai/clearml.git"
		}
		id := s.AddTask(fakeserver.TaskSpec{
			Name: "demo task",
			Script: &fakeserver.Script{
				Repository: repo,
				EntryPoint: *demoEntry,
				Binary:     "python3",
			},
			Queue: fakeserver.DefaultQueueName,
		})
		fmt.Printf("seeded demo task %s in queue %q\n", id, fakeserver.DefaultQueueName)
	}
	url, err := s.Start(*addr)
	if err != nil {
		log.Fatalf("clearml-server: %v", err)
	}
	fmt.Printf("fake clearml-server listening on %s\n", url)
	fmt.Printf("access_key: %s\nsecret_key: %s\n", fakeserver.TestsAccessKey, fakeserver.TestsSecretKey)
	fmt.Printf("default queue id: %s\n", s.DefaultQueueID())
	if *filesAddr != "" {
		fs := fakeserver.NewFileServer()
		fs.RequireAuth(s)
		furl, err := fs.Start(*filesAddr)
		if err != nil {
			log.Fatalf("clearml-server: files server: %v", err)
		}
		defer fs.Close()
		fmt.Printf("files server listening on %s\n", furl)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = s.Close()
}
