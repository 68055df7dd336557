package synproxy

import "github.com/tapvs/tapvs/tcprw"

// ToServer and ToClient translate a header through the State's published
// rewriter, as nat does, in the shape the tests here were written for.
func (s *State) ToServer(tcp []byte, acc uint32) (uint32, bool) {
	out := s.rw.Load().ToServer(tcp, acc)
	return out.Acc, out.Fault == tcprw.OK
}

func (s *State) ToClient(tcp []byte, acc uint32) (uint32, bool) {
	out := s.rw.Load().ToClient(tcp, acc)
	return out.Acc, out.Fault == tcprw.OK
}
