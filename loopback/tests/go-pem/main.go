// Reads a JSON array of strings on stdin and prints, for each, what Go's encoding/pem.Decode
// finds when called again and again on what it leaves: each block's type, its bytes in hex,
// whether it had header lines and how many bytes were left after it. loopback/tests/go_pem.rs holds loopback's reading of
// PEM against this.
package main

import (
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
)

type found struct {
	Type    string `json:"type"`
	Bytes   string `json:"bytes"`
	Headers bool   `json:"headers"`
	Left    int    `json:"left"`
}

func main() {
	var inputs []string
	if err := json.NewDecoder(os.Stdin).Decode(&inputs); err != nil {
		panic(err)
	}
	results := make([][]found, 0, len(inputs))
	for _, input := range inputs {
		rest := []byte(input)
		blocks := []found{}
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			blocks = append(blocks, found{block.Type, hex.EncodeToString(block.Bytes), len(block.Headers) > 0, len(rest)})
		}
		results = append(results, blocks)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		panic(err)
	}
}
