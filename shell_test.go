package main

import "testing"

func TestShellJoinSplit(t *testing.T) {
	for _, words := range [][]string{{"a", "b c", "it's", ""}, {"team-a", "x=1"}} {
		if got := shellSplitLoose(shellJoin(words)); len(got) != len(words) {
			t.Errorf("%q -> %q -> %q", words, shellJoin(words), got)
		} else {
			for i := range words {
				if got[i] != words[i] {
					t.Errorf("%q -> %q", words, got)
				}
			}
		}
	}
}
