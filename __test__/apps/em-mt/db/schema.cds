namespace em.mt;
entity Notes {
  key ID : Integer;
      text : String;
}
