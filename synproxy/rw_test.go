package synproxy

// ToServer and ToClient translate a header through the State's published
// rewriter, as nat does, in the shape the tests here were written for.
func (s *State) ToServer(tcp []byte, acc uint32) (uint32, bool) {
	sum, res, _, _ := s.rw.Load().ToServer(tcp, acc)
	return sum, res.Fault() == 0
}

func (s *State) ToClient(tcp []byte, acc uint32) (uint32, bool) {
	sum, res, _ := s.rw.Load().ToClient(tcp, acc)
	return sum, res.Fault() == 0
}
